//! The Puppet module in `puppet/forge`: it validates and is lint-clean, every
//! role class compiles with the sample hiera data (everything managed, as on
//! a real host), and the configuration files it renders pass each daemon's
//! own `--check-config`.

#![allow(clippy::unwrap_used)] // tests may unwrap: a panic is the failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use forge_deploy_tests::{Puppet, binary, files_with_suffix, repo_root, require_tool, run, run_ok};

const ALL_ROLES: &str = "include forge::proxy\ninclude forge::monitor\ninclude forge::idm\ninclude forge::forgectl\ninclude forge::live\n";

fn module() -> PathBuf {
    repo_root().join("puppet/forge")
}

fn all_files(dir: &Path, suffix: &str, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            all_files(&p, suffix, out);
        } else if p.to_string_lossy().ends_with(suffix) {
            out.push(p);
        }
    }
}

#[test]
fn puppet_parser_validate_is_clean() {
    let p = Puppet::new();
    let mut manifests = Vec::new();
    all_files(&module(), ".pp", &mut manifests);
    assert!(manifests.len() >= 8, "manifests: {manifests:?}");
    run_ok(
        p.command("parser", "production")
            .arg("validate")
            .args(&manifests),
    );
    let templates = files_with_suffix(&module().join("templates"), &[".epp"]);
    assert!(!templates.is_empty());
    run_ok(
        p.command("epp", "production")
            .arg("validate")
            .args(&templates),
    );
}

#[test]
fn puppet_parser_validate_catches_errors() {
    let p = Puppet::new();
    let bad = p.path().join("bad.pp");
    std::fs::write(
        &bad,
        "class forge::bad {\n  file { '/x': ensure => file\n}\n",
    )
    .unwrap();
    let out = run(p.command("parser", "production").arg("validate").arg(&bad));
    assert!(!out.status.success(), "a syntax error passed validation");
}

#[test]
fn puppet_lint_fail_on_warnings_is_clean() {
    require_tool("puppet-lint");
    let out = run_ok(
        Command::new("puppet-lint")
            .args(["--fail-on-warnings", "--no-autoloader_layout-check"])
            .arg(module()),
    );
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.trim().is_empty(), "puppet-lint: {said}");
    // And it does fail on a warning.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.pp");
    std::fs::write(
        &bad,
        "# @summary x\nclass bad {\n  file { \"/x\": ensure => file }\n}\n",
    )
    .unwrap();
    let out = run(Command::new("puppet-lint")
        .arg("--fail-on-warnings")
        .arg(&bad));
    assert!(
        !out.status.success(),
        "puppet-lint accepted double quotes without interpolation"
    );
}

/// Compiles a catalog of `manifest` with the production hiera layer and
/// returns its resources as `Type[title]` → parameters.
fn compile(manifest: &str) -> BTreeMap<String, serde_json::Value> {
    let p = Puppet::new();
    let site = p.path().join("site.pp");
    std::fs::write(&site, manifest).unwrap();
    let out = run_ok(
        p.command("catalog", "production")
            .arg("compile")
            .arg(format!("--manifest={}", site.display()))
            .args(["--render-as", "json"]),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Log lines ("Notice: Compiled catalog …") may precede the JSON.
    let json = &stdout[stdout
        .find('{')
        .unwrap_or_else(|| panic!("no catalog in {stdout}"))..];
    let catalog: serde_json::Value = serde_json::from_str(json).expect("catalog JSON");
    catalog["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            (
                format!(
                    "{}[{}]",
                    r["type"].as_str().unwrap(),
                    r["title"].as_str().unwrap()
                ),
                r["parameters"].clone(),
            )
        })
        .collect()
}

fn assert_has(resources: &BTreeMap<String, serde_json::Value>, wanted: &[&str]) {
    for w in wanted {
        assert!(
            resources.contains_key(*w),
            "{w} missing from the catalog; have:\n{}",
            resources.keys().cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

#[test]
fn proxy_role_compiles() {
    let r = compile("include forge::proxy\n");
    assert_has(
        &r,
        &[
            "Package[forge]",
            "User[forge]",
            "File[/etc/forge/dynamicproxy.toml]",
            "File[/etc/forge/proxylistener.toml]",
            "Service[dynamicproxy.service]",
            "Service[proxylistener.service]",
            "File[/etc/redis/forge-static.conf]",
            "File[/etc/redis/redis-forge.conf]",
            "File[/etc/redis/sentinel-forge.conf]",
            "Service[redis-server@forge.service]",
            "Service[redis-sentinel@forge.service]",
            "File[/etc/forge/tls/toolforge.org.crt]",
            "File[/etc/forge/tls/toolforge.org.key]",
        ],
    );
    assert_eq!(r["File[/etc/forge/tls/toolforge.org.key]"]["mode"], "0640");
    // A config change reloads (SIGHUP) rather than restarts.
    assert_eq!(
        r["Service[dynamicproxy.service]"]["restart"],
        "/bin/systemctl reload dynamicproxy.service"
    );
    // Live state stays out of Puppet: files Sentinel rewrites are created once.
    for f in ["redis-forge.conf", "sentinel-forge.conf"] {
        assert_eq!(r[&format!("File[/etc/redis/{f}]")]["replace"], false, "{f}");
    }
    assert!(
        !r.keys()
            .any(|k| k.contains("active-proxy") || k.contains("live.toml"))
    );
    let conf = r["File[/etc/forge/dynamicproxy.toml]"]["content"]
        .as_str()
        .unwrap();
    assert!(
        conf.contains("default_upstream = \"http://k8s-ingress.example.org:30000\""),
        "{conf}"
    );
    assert!(
        conf.contains("listen_https = \"0.0.0.0:443\"")
            && conf.contains("dir = \"/etc/forge/tls\""),
        "{conf}"
    );
    // The proxy reads routes from its local Redis (a replica); `[redis]`
    // names the master through the Sentinels.
    assert!(
        conf.contains("read_url = \"redis://127.0.0.1:6379\""),
        "{conf}"
    );
    assert!(
        conf.contains("sentinels = [\"proxy-01.example.org:26379\""),
        "{conf}"
    );
    let conf = r["File[/etc/forge/proxylistener.toml]"]["content"]
        .as_str()
        .unwrap();
    assert!(
        conf.contains("sentinels = [\"proxy-01.example.org:26379\""),
        "{conf}"
    );
}

#[test]
fn monitor_role_compiles() {
    let r = compile("include forge::monitor\n");
    assert_has(
        &r,
        &[
            "Package[forge]",
            "File[/etc/forge/webservicemonitor.toml]",
            "Service[webservicemonitor.service]",
            // tools live in /srv/tools in the sample data: the unit may write there.
            "File[/etc/systemd/system/webservicemonitor.service.d/puppet.conf]",
        ],
    );
    assert!(
        !r.keys()
            .any(|k| k.contains("dynamicproxy") || k.contains("idm-web"))
    );
    let dropin = r["File[/etc/systemd/system/webservicemonitor.service.d/puppet.conf]"]["content"]
        .as_str()
        .unwrap();
    assert!(
        dropin.contains("ReadWritePaths=-/srv/tools\n")
            && dropin.contains("IPAddressAllow=198.51.100.0/24\n"),
        "{dropin}"
    );
}

#[test]
fn idm_role_compiles() {
    let r = compile("include forge::idm\n");
    assert_has(
        &r,
        &[
            "Package[forge]",
            "File[/etc/forge/idm-web.toml]",
            "File[/etc/forge/rq-worker.toml]",
            "File[/etc/forge/secrets/idm-web-token]",
            "File[/etc/forge/secrets/idm-web-database-url]",
            "Service[idm-web.service]",
            "Service[rq-worker.service]",
            "Service[idm-web-sync-username-block.timer]",
            "Service[idm-web-expire-signups.timer]",
            "File[/etc/systemd/system/idm-web-expire-signups.service.d/puppet.conf]",
            "File[/etc/systemd/system/idm-web-sync-username-block.timer.d/puppet.conf]",
        ],
    );
    // Secrets stay out of configuration files.
    let conf = r["File[/etc/forge/idm-web.toml]"]["content"]
        .as_str()
        .unwrap();
    for secret in [
        "db-s3cret-value",
        "ldap-s3cret-value",
        "smtp-s3cret-value",
        "0123456789abcdef",
    ] {
        assert!(
            !conf.contains(secret),
            "{secret} leaked into idm-web.toml:\n{conf}"
        );
    }
    // A changed secret restarts the daemons that read it.
    let notify = r["Forge::Secret[idm-web-token]"]["notify"].to_string();
    assert!(
        notify.contains("Forge::Daemon[idm-web]") && notify.contains("Forge::Daemon[rq-worker]"),
        "{notify}"
    );
    // rq-worker runs idm-web's jobs with idm-web's configuration.
    let worker = r["File[/etc/forge/rq-worker.toml]"]["content"]
        .as_str()
        .unwrap();
    assert!(
        worker.contains("[idm]\nconfig = \"/etc/forge/idm-web.toml\"")
            && worker.contains("queues = [\"default\", \"notification\"]"),
        "{worker}"
    );
    // The timers' schedule, age and one-host-per-period lease reach the units.
    let expire =
        r["File[/etc/systemd/system/idm-web-expire-signups.service.d/puppet.conf]"]["content"]
            .as_str()
            .unwrap();
    assert!(
        expire.contains(
            "ExecStart=\nExecStart=/usr/bin/idm-web --config /etc/forge/idm-web.toml --once-per 72000 expire-signups --days 7\n"
        ),
        "{expire}"
    );
    let sync =
        r["File[/etc/systemd/system/idm-web-sync-username-block.timer.d/puppet.conf]"]["content"]
            .as_str()
            .unwrap();
    assert!(
        sync.contains("OnCalendar=\nOnCalendar=*-*-* 03:00:00\n"),
        "{sync}"
    );
    // idm-web and rq-worker read their configuration only at start: a
    // change restarts them.
    assert!(r["Service[idm-web.service]"].get("restart").is_none());
    assert!(r["Service[rq-worker.service]"].get("restart").is_none());
}

#[test]
fn all_roles_compile_on_one_host() {
    let r = compile(ALL_ROLES);
    assert_has(
        &r,
        &[
            "Service[dynamicproxy.service]",
            "Service[webservicemonitor.service]",
            "Service[idm-web.service]",
            "File[/etc/forge/forgectl.toml]",
            "File[/etc/forge/live.toml]",
        ],
    );
}

#[test]
fn rendered_configs_pass_each_daemons_check_config() {
    let p = Puppet::new();
    let root = p.root();
    for d in ["etc/systemd/system", "etc/redis"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let out = run(p
        .command("apply", "staging")
        .arg("--detailed-exitcodes")
        .args(["-e", ALL_ROLES]));
    // 0: nothing changed, 2: changes applied; 4/6: failures.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "puppet apply failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let etc = root.join("etc/forge");
    let mut failures = Vec::new();
    for d in forge_deploy_tests::DAEMONS {
        let file = etc.join(format!("{d}.toml"));
        assert!(file.is_file(), "{} was not rendered", file.display());
        let out = run(Command::new(binary(d))
            .arg("--config")
            .arg(&file)
            .arg("--check-config"));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{d}: {}", said.trim());
        if !out.status.success() || !said.contains("configuration OK") {
            failures.push(format!(
                "{d} --check-config {} failed:\n{said}\n--- the file:\n{}",
                file.display(),
                std::fs::read_to_string(&file).unwrap()
            ));
        }
    }
    // forgectl has no --check-config: `status` loads the file first and
    // exits 2 on a configuration error, 1 when hosts don't answer (no
    // network here).
    let file = etc.join("forgectl.toml");
    let out = run(Command::new(binary("forgectl"))
        .arg("--config")
        .arg(&file)
        .args(["status", "--json"]));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(2) || said.contains("forgectl.toml:") {
        failures.push(format!("forgectl rejects {}:\n{said}", file.display()));
    }
    // live.toml is read by the registration clients: portreleaser exits 78
    // when the file is unreadable or invalid, 69 when no endpoint answers.
    let file = etc.join("live.toml");
    let out = run(Command::new(binary("portreleaser"))
        .arg("--active-proxy")
        .arg(&file)
        .args(["--connect-timeout", "0.5", "--reply-timeout", "0.5"]));
    if out.status.code() == Some(78) {
        failures.push(format!(
            "portreleaser rejects {}:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    // The Redis and Sentinel files load in a real redis-server (port 0: it
    // parses the file, then exits for having nothing to listen on).
    require_tool("redis-server");
    let scratch = tempfile::tempdir().unwrap();
    let redis_etc = root.join("etc/redis");
    for (name, sentinel) in [
        ("forge-static.conf", false),
        ("redis-forge.conf", false),
        ("sentinel-forge.conf", true),
    ] {
        // Staged: the include names the production path; Sentinel wants a
        // writable file of its own.
        let text = std::fs::read_to_string(redis_etc.join(name))
            .unwrap()
            .replace(
                "include /etc/redis/",
                &format!("include {}/", redis_etc.display()),
            );
        let copy = scratch.path().join(name);
        std::fs::write(&copy, text).unwrap();
        // (bounded, should it ever start listening after all)
        let mut cmd = Command::new("timeout");
        cmd.args(["20", "redis-server"]).arg(&copy);
        if sentinel {
            cmd.arg("--sentinel");
        }
        cmd.args(["--port", "0", "--logfile", ""])
            .arg("--dir")
            .arg(scratch.path());
        let out = run(&mut cmd);
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        if !said.contains("Configuration loaded") || said.contains("FATAL CONFIG FILE ERROR") {
            failures.push(format!("redis-server rejects {name}:\n{said}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // The secrets the configuration names are there, and only readable by
    // owner and group.
    use std::os::unix::fs::PermissionsExt;
    for s in [
        "idm-web-token",
        "idm-web-database-url",
        "idm-web-ldap-password",
        "idm-web-smtp-password",
    ] {
        let meta = std::fs::metadata(etc.join("secrets").join(s)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o640, "{s}");
    }
    // A second run changes nothing (idempotent).
    let again = run(p
        .command("apply", "staging")
        .arg("--detailed-exitcodes")
        .args(["-e", ALL_ROLES]));
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
}

#[test]
fn check_config_rejects_an_unknown_key() {
    // The check above means something only if the loader refuses bad files.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxylistener.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:8282\"\nlisten_admn = \"127.0.0.1:9282\"\n",
    )
    .unwrap();
    let out = run(Command::new(binary("proxylistener"))
        .arg("--config")
        .arg(&file)
        .arg("--check-config"));
    assert!(!out.status.success(), "an unknown key was accepted");
}

/// Every parameter of every class and defined type has a `@param` line
/// (the module's reference documentation; defaults are in the signature).
#[test]
fn every_parameter_is_documented() {
    let mut manifests = Vec::new();
    all_files(&module().join("manifests"), ".pp", &mut manifests);
    let mut undocumented = Vec::new();
    let mut checked = 0;
    for m in &manifests {
        let text = std::fs::read_to_string(m).unwrap();
        let Some(start) = text.find("\nclass ").or_else(|| text.find("\ndefine ")) else {
            continue;
        };
        let signature = &text[start..];
        let end = signature.find(") {").unwrap_or(signature.len());
        for line in signature[..end].lines().skip(1) {
            let Some(dollar) = line.find('$') else {
                continue;
            };
            let name: String = line[dollar + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            checked += 1;
            if !text.contains(&format!("# @param {name} ")) {
                undocumented.push(format!("{}: ${name}", m.display()));
            }
        }
        assert!(text.contains("# @summary"), "{}: no @summary", m.display());
    }
    assert!(
        checked > 60,
        "only {checked} parameters found: is the parser broken?"
    );
    assert!(
        undocumented.is_empty(),
        "undocumented parameters:\n{}",
        undocumented.join("\n")
    );
}
