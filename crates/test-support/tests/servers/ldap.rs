//! slapd, driven with ldap3.

use std::collections::HashSet;
use std::time::Duration;

use forge_test_support::Slapd;
use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

const SSH_KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl \
                       alice@example";

/// Whether `dn` can bind with `password`; the LDAP result code otherwise.
async fn bind(slapd: &Slapd, dn: &str, password: &str) -> Result<(), u32> {
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(2));
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &slapd.url())
        .await
        .expect("connect to slapd");
    ldap3::drive!(conn);
    let result = ldap.simple_bind(dn, password).await.expect("bind request");
    let _ = ldap.unbind().await;
    if result.rc == 0 {
        Ok(())
    } else {
        Err(result.rc)
    }
}

/// Adds `uid=<uid>` under people with the object classes idm-web uses.
async fn add_user(slapd: &Slapd, uid: &str, user_password: &str) -> String {
    let dn = format!("uid={uid},{}", slapd.people_dn());
    let mut ldap = slapd.admin_conn().await.expect("admin connection");
    let set = |values: &[&str]| {
        values
            .iter()
            .map(|v| (*v).to_owned())
            .collect::<HashSet<_>>()
    };
    let home = format!("/home/{uid}");
    let attrs = vec![
        (
            "objectClass".to_owned(),
            set(&["inetOrgPerson", "posixAccount", "ldapPublicKey"]),
        ),
        ("cn".to_owned(), set(&["Alice Example"])),
        ("sn".to_owned(), set(&["Alice Example"])),
        ("uid".to_owned(), set(&[uid])),
        ("uidNumber".to_owned(), set(&["5001"])),
        ("gidNumber".to_owned(), set(&["500"])),
        ("homeDirectory".to_owned(), set(&[home.as_str()])),
        ("loginShell".to_owned(), set(&["/bin/bash"])),
        ("mail".to_owned(), set(&["alice@example.org"])),
        ("userPassword".to_owned(), set(&[user_password])),
        ("sshPublicKey".to_owned(), set(&[SSH_KEY])),
    ];
    ldap.add(&dn, attrs)
        .await
        .expect("add request")
        .success()
        .expect("entry added");
    let _ = ldap.unbind().await;
    dn
}

#[tokio::test]
async fn entry_with_ssh_key_is_added_and_found() {
    let mut slapd = Slapd::builder()
        .base_dn("dc=forge,dc=test")
        .start()
        .await
        .unwrap();
    assert_eq!(slapd.base_dn(), "dc=forge,dc=test");
    assert_eq!(slapd.admin_dn(), "cn=admin,dc=forge,dc=test");
    assert_eq!(slapd.people_dn(), "ou=people,dc=forge,dc=test");
    bind(&slapd, &slapd.admin_dn(), slapd.admin_password())
        .await
        .unwrap();
    assert_eq!(bind(&slapd, &slapd.admin_dn(), "wrong").await, Err(49));

    let dn = add_user(&slapd, "alice", "plain-secret").await;
    let search = |slapd_url: String| async move {
        let (conn, mut ldap) = LdapConnAsync::new(&slapd_url).await.unwrap();
        ldap3::drive!(conn);
        let (entries, _) = ldap
            .search(
                "dc=forge,dc=test",
                Scope::Subtree,
                "(&(objectClass=ldapPublicKey)(uid=alice))",
                vec!["sshPublicKey", "objectClass", "uidNumber"],
            )
            .await
            .unwrap()
            .success()
            .unwrap();
        let _ = ldap.unbind().await;
        entries
            .into_iter()
            .map(SearchEntry::construct)
            .collect::<Vec<_>>()
    };
    let found = search(slapd.url()).await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].dn, dn);
    // sshPublicKey has octet-string syntax: ldap3 may return it as binary.
    let key = found[0]
        .attrs
        .get("sshPublicKey")
        .and_then(|v| v.first().cloned())
        .or_else(|| {
            found[0]
                .bin_attrs
                .get("sshPublicKey")
                .and_then(|v| v.first())
                .map(|bytes| String::from_utf8_lossy(bytes).into_owned())
        });
    assert_eq!(key.as_deref(), Some(SSH_KEY));
    assert_eq!(found[0].attrs["uidNumber"], vec!["5001".to_owned()]);

    // The entry's own password (plain text here) binds.
    bind(&slapd, &dn, "plain-secret").await.unwrap();

    // The directory goes down and comes back with its data.
    let port = slapd.port();
    slapd.stop().unwrap();
    assert!(!slapd.is_running());
    let down = LdapConnAsync::with_settings(
        LdapConnSettings::new().set_conn_timeout(Duration::from_secs(1)),
        &slapd.url(),
    )
    .await;
    assert!(down.is_err(), "connected to a stopped slapd");
    slapd.restart().await.unwrap();
    assert_eq!(slapd.port(), port);
    assert_eq!(search(slapd.url()).await.len(), 1);

    // A crash loses nothing committed either.
    slapd.kill().unwrap();
    slapd.restart().await.unwrap();
    assert_eq!(search(slapd.url()).await.len(), 1);
}

#[tokio::test]
async fn argon2_hashes_bind_and_policy_locks() {
    use argon2::password_hash::{PasswordHasher, SaltString};

    let slapd = Slapd::start().await.unwrap();
    assert!(
        slapd.has_argon2(),
        "the argon2 module is installed on this machine"
    );
    assert!(slapd.has_ppolicy());

    // The hash idm-web would store: argon2id, PHC string, in {ARGON2}.
    let salt = SaltString::from_b64("Zm9yZ2UtdGVzdC1zYWx0").unwrap();
    let phc = argon2::Argon2::default()
        .hash_password(b"correct horse", &salt)
        .unwrap()
        .to_string();
    let dn = add_user(&slapd, "bob", &format!("{{ARGON2}}{phc}")).await;
    bind(&slapd, &dn, "correct horse").await.unwrap();
    assert_eq!(bind(&slapd, &dn, "wrong horse").await, Err(49));

    // An account manager locks the account through the password policy.
    slapd
        .ldapmodify(&format!(
            "dn: {dn}\nchangetype: modify\nreplace: pwdAccountLockedTime\n\
             pwdAccountLockedTime: 000001010000Z\n"
        ))
        .unwrap();
    assert_eq!(bind(&slapd, &dn, "correct horse").await, Err(49));
    slapd
        .ldapmodify(&format!(
            "dn: {dn}\nchangetype: modify\ndelete: pwdAccountLockedTime\n"
        ))
        .unwrap();
    bind(&slapd, &dn, "correct horse").await.unwrap();

    // ldapadd adds entries from LDIF.
    let group = format!("cn=tools,{}", slapd.groups_dn());
    slapd
        .ldapadd(&format!(
            "dn: {group}\nobjectClass: posixGroup\ncn: tools\ngidNumber: 500\nmemberUid: bob\n"
        ))
        .unwrap();
    let refused = slapd.ldapadd(&format!(
        "dn: {group}\nobjectClass: posixGroup\ncn: tools\ngidNumber: 500\n"
    ));
    assert!(refused.is_err(), "a duplicate entry was accepted");
}
