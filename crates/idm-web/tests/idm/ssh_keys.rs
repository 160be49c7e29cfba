//! Part 2 self-service: SSH public keys in LDAP.

use crate::common::{Env, EnvOptions, GOOD_PASSWORD, make_account};

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl hana@laptop";

fn keygen(dir: &std::path::Path, name: &str, args: &[&str]) -> (String, String) {
    let path = dir.join(name);
    let ok = std::process::Command::new("ssh-keygen")
        .args(args)
        .args(["-N", "", "-q", "-C", "test@example", "-f"])
        .arg(&path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ssh-keygen {args:?}");
    (
        std::fs::read_to_string(path.with_extension("pub")).unwrap(),
        std::fs::read_to_string(&path).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_keys_are_added_listed_and_removed_and_bad_ones_refused() {
    let env = Env::start_with(EnvOptions {
        admin_recipients: false,
        worker: false,
        ..Default::default()
    })
    .await;
    make_account(&env, "hana", "Hana Example", GOOD_PASSWORD).await;
    let mut c = env.client();
    assert_eq!(c.get("/account/keys").await.location(), Some("/login"));
    assert_eq!(
        c.submit(
            "/login",
            "/login",
            &[("login", "hana"), ("password", GOOD_PASSWORD)]
        )
        .await
        .status,
        303
    );

    let added = c
        .submit("/account/keys", "/account/keys", &[("key", ED25519)])
        .await;
    assert_eq!(added.status, 303, "{}", added.body);
    let page = c.get("/account/keys").await;
    assert!(
        page.body.contains("SHA256:") && page.body.contains("hana@laptop"),
        "{}",
        page.body
    );
    let entry = env.ldap_entry("hana").await.unwrap();
    let stored: Vec<String> = entry
        .attrs
        .get("sshPublicKey")
        .cloned()
        .or_else(|| {
            entry.bin_attrs.get("sshPublicKey").map(|v| {
                v.iter()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .collect()
            })
        })
        .unwrap_or_default();
    assert_eq!(stored, vec![ED25519.to_owned()]);

    let dup = c
        .submit("/account/keys", "/account/keys", &[("key", ED25519)])
        .await;
    assert_eq!(dup.status, 400);
    assert!(dup.body.contains("already on your account"), "{}", dup.body);

    let dir = tempfile::tempdir().unwrap();
    let (_, private) = keygen(dir.path(), "priv", &["-t", "ed25519"]);
    let refused = c
        .submit("/account/keys", "/account/keys", &[("key", &private)])
        .await;
    assert_eq!(refused.status, 400);
    assert!(refused.body.contains("private key"));
    assert!(
        !refused.body.contains("BEGIN OPENSSH PRIVATE KEY"),
        "a private key is never echoed"
    );
    let (weak_rsa, _) = keygen(dir.path(), "rsa1024", &["-t", "rsa", "-b", "1024"]);
    let refused = c
        .submit(
            "/account/keys",
            "/account/keys",
            &[("key", weak_rsa.trim())],
        )
        .await;
    assert_eq!(refused.status, 400);
    assert!(
        refused
            .body
            .contains("at least 2048 bits (this one has 1024)"),
        "{}",
        refused.body
    );
    let (good_rsa, _) = keygen(dir.path(), "rsa4096", &["-t", "rsa", "-b", "4096"]);
    assert_eq!(
        c.submit(
            "/account/keys",
            "/account/keys",
            &[("key", good_rsa.trim())]
        )
        .await
        .status,
        303
    );
    let garbage = c
        .submit("/account/keys", "/account/keys", &[("key", "not a key")])
        .await;
    assert_eq!(garbage.status, 400);
    assert!(
        garbage.body.contains("not an OpenSSH public key"),
        "{}",
        garbage.body
    );
    assert_eq!(env.core.list_ssh_keys(&entry.dn).await.unwrap().len(), 2);
    // Both accepted keys are in LDAP, as typed (RSA-4096 and ed25519).
    let entry = env.ldap_entry("hana").await.unwrap();
    let mut stored = entry.attrs.get("sshPublicKey").cloned().unwrap_or_default();
    stored.sort();
    let rsa_body = good_rsa.split_whitespace().nth(1).unwrap();
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0], ED25519);
    assert!(
        stored[1].starts_with("ssh-rsa ") && stored[1].contains(rsa_body),
        "{stored:?}"
    );

    // Remove the ed25519 key by fingerprint.
    let fp = env
        .core
        .list_ssh_keys(&entry.dn)
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.algorithm == "ssh-ed25519")
        .unwrap()
        .fingerprint;
    let removed = c
        .submit(
            "/account/keys",
            "/account/keys/delete",
            &[("fingerprint", &fp)],
        )
        .await;
    assert_eq!(removed.status, 303);
    let left = env.core.list_ssh_keys(&entry.dn).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].algorithm, "ssh-rsa");
}
