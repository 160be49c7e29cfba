//! The web service types of `webservice-runner --type <type>`: what each one
//! checks in the tool's home, which server it runs, and the configuration it
//! generates.
//!
//! The grid's submit template runs `webservice-runner --register-proxy --type
//! <type> [extra args]` as the tool's user on an exec host, so the runner must
//! know today's types and start them the way today's `toolsws/wstypes/*.py`
//! (operations-software-tools-webservice) did:
//!
//! | type | needs in the home | runs |
//! |---|---|---|
//! | `lighttpd` | `public_html/` or `.lighttpd.conf` | lighttpd with a generated config (document root `~/public_html`, PHP through `php-cgi` FastCGI), `~/.lighttpd.conf` appended |
//! | `lighttpd-plain` | the same | the same without PHP |
//! | `uwsgi-python` | `www/python/src/` | uWSGI with `app` of `www/python/src/app.py`, `www/python/venv` when present, `www/python/uwsgi.ini` appended |
//! | `uwsgi-plain` | `uwsgi.ini` | uWSGI with the tool's `uwsgi.ini` |
//! | `nodejs` | `www/js/package.json` with a `start` script | `npm start` in `www/js` |
//! | `generic` | — | the extra arguments, in the home |
//! | `tomcat` | — | refused: not supported on this grid (see `docs/migration.md`) |
//!
//! Every server gets `PORT` (and today's `TOOL_WEB_PORT`) in its environment;
//! `{port}` in a `generic` command is replaced by the port. Generated files
//! (lighttpd's config, pid file and PHP socket) go into a private directory
//! under `$TMPDIR` (Grid Engine's per-job temporary directory), owned by the
//! tool and removed when the runner ends.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A web service type, as named after `--type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebServiceType {
    /// lighttpd serving `~/public_html` with PHP.
    Lighttpd,
    /// lighttpd serving `~/public_html` without PHP.
    LighttpdPlain,
    /// uWSGI running the tool's Python WSGI `app`.
    UwsgiPython,
    /// uWSGI with the tool's own `~/uwsgi.ini`.
    UwsgiPlain,
    /// `npm start` in `~/www/js`.
    Nodejs,
    /// Tomcat: refused on this grid.
    Tomcat,
    /// Any command (the extra arguments).
    Generic,
}

/// Every type name `--type` accepts, in the order help texts list them.
pub const TYPE_NAMES: &[&str] = &[
    "lighttpd",
    "lighttpd-plain",
    "uwsgi-python",
    "uwsgi-plain",
    "nodejs",
    "generic",
    "tomcat",
];

impl WebServiceType {
    /// The type's name as given to `--type`.
    pub fn name(self) -> &'static str {
        match self {
            WebServiceType::Lighttpd => "lighttpd",
            WebServiceType::LighttpdPlain => "lighttpd-plain",
            WebServiceType::UwsgiPython => "uwsgi-python",
            WebServiceType::UwsgiPlain => "uwsgi-plain",
            WebServiceType::Nodejs => "nodejs",
            WebServiceType::Tomcat => "tomcat",
            WebServiceType::Generic => "generic",
        }
    }
}

impl fmt::Display for WebServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WebServiceType {
    type Err = TypeError;

    fn from_str(s: &str) -> Result<Self, TypeError> {
        Ok(match s {
            "lighttpd" => WebServiceType::Lighttpd,
            "lighttpd-plain" => WebServiceType::LighttpdPlain,
            "uwsgi-python" => WebServiceType::UwsgiPython,
            "uwsgi-plain" => WebServiceType::UwsgiPlain,
            "nodejs" => WebServiceType::Nodejs,
            "tomcat" => WebServiceType::Tomcat,
            "generic" => WebServiceType::Generic,
            other => return Err(TypeError::Unknown(other.to_owned())),
        })
    }
}

/// Why a type cannot be started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypeError {
    /// No such type.
    #[error("unknown web service type {:?}; known types: {}", .0, TYPE_NAMES.join(", "))]
    Unknown(String),
    /// A type this grid does not run.
    #[error(
        "the tomcat type is not supported on this grid (no Debian Tomcat is installed on the \
         web exec hosts); run Tomcat yourself with the generic type, or move the tool to Kubernetes"
    )]
    TomcatUnsupported,
    /// The tool's home lacks what the type needs.
    #[error("{0}")]
    NotSetUp(String),
    /// `generic` without a command.
    #[error("the generic type needs the command to run as its extra arguments")]
    NoCommand,
    /// The runner's own user could not be looked up.
    #[error("cannot look up the user running this: {0}")]
    NoUser(String),
    /// A generated file could not be written.
    #[error("cannot write the generated configuration: {0}")]
    CannotPrepare(String),
}

/// The tool a runner serves: the user it runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tool {
    /// The tool's name (`foo` of `tools.foo`).
    pub name: String,
    /// The user name (`tools.foo`).
    pub user: String,
    /// The user's primary group name.
    pub group: String,
    /// The tool's home directory.
    pub home: PathBuf,
}

impl Tool {
    /// The tool the current process runs as (today's `Tool.from_currentuser`):
    /// the name is the user name after its first `.` (`tools.foo` → `foo`).
    pub fn current() -> Result<Tool, TypeError> {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .map_err(|e| TypeError::NoUser(e.to_string()))?
            .ok_or_else(|| TypeError::NoUser(format!("uid {uid} has no passwd entry")))?;
        let group = nix::unistd::Group::from_gid(user.gid)
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_else(|| user.name.clone());
        let name = user
            .name
            .split_once('.')
            .map(|(_, n)| n.to_owned())
            .unwrap_or_else(|| user.name.clone());
        Ok(Tool {
            name,
            user: user.name,
            group,
            home: user.dir,
        })
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.home.join(sub)
    }
}

/// What to run for a type: the argv, where, with which extra environment,
/// and the directory of generated files (removed when dropped).
#[derive(Debug)]
pub struct Launch {
    /// The server command and its arguments (`{port}` still to be replaced).
    pub command: Vec<String>,
    /// Working directory; `None` = the runner's.
    pub cwd: Option<PathBuf>,
    /// The private directory holding generated files, if any.
    pub run_dir: Option<tempfile::TempDir>,
    /// Extra arguments the type ignores (today's types ignore them too).
    pub ignored_args: Vec<String>,
}

/// Checks the tool's home for `ty` and builds what to run on `port`.
pub fn prepare(
    ty: WebServiceType,
    tool: &Tool,
    port: u16,
    extra_args: &[String],
) -> Result<Launch, TypeError> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let ignored = |args: &[String]| args.to_vec();
    match ty {
        WebServiceType::Tomcat => Err(TypeError::TomcatUnsupported),
        WebServiceType::Generic => {
            if extra_args.is_empty() {
                return Err(TypeError::NoCommand);
            }
            Ok(Launch {
                command: extra_args.to_vec(),
                cwd: Some(tool.home.clone()),
                run_dir: None,
                ignored_args: Vec::new(),
            })
        }
        WebServiceType::Lighttpd | WebServiceType::LighttpdPlain => {
            let public_html = tool.path("public_html");
            let custom = tool.path(".lighttpd.conf");
            if !public_html.exists() && !custom.exists() {
                return Err(TypeError::NotSetUp(format!(
                    "Could not find a public_html folder or a .lighttpd.conf file in {}",
                    tool.home.display()
                )));
            }
            let dir = private_dir(&tool.name)?;
            let mut config = lighttpd_config(tool, port, dir.path());
            if ty == WebServiceType::Lighttpd {
                config.push_str(&php_config(dir.path()));
            }
            // The tool's own file is appended, as today; an unreadable one is skipped.
            if let Ok(own) = std::fs::read_to_string(&custom) {
                config.push_str("\n# ~/.lighttpd.conf\n");
                config.push_str(&own);
            }
            let path = dir.path().join("lighttpd.conf");
            std::fs::write(&path, config)
                .map_err(|e| TypeError::CannotPrepare(format!("{}: {e}", path.display())))?;
            Ok(Launch {
                command: vec![
                    "/usr/sbin/lighttpd".into(),
                    "-f".into(),
                    s(&path),
                    "-D".into(),
                ],
                cwd: Some(tool.home.clone()),
                run_dir: Some(dir),
                ignored_args: ignored(extra_args),
            })
        }
        WebServiceType::UwsgiPython => {
            let src = tool.path("www/python/src");
            if !src.exists() {
                return Err(TypeError::NotSetUp(format!(
                    "Could not find {}. Are you sure you have a proper uwsgi application in \
                     ~/www/python/src?",
                    src.display()
                )));
            }
            let mut command: Vec<String> = vec![
                "/usr/bin/uwsgi".into(),
                // Plugins that don't load are skipped by uWSGI.
                "--plugin".into(),
                "python,python3".into(),
                "--http-socket".into(),
                format!(":{port}"),
                "--chdir".into(),
                s(&src),
                "--logto".into(),
                s(&tool.path("uwsgi.log")),
                "--callable".into(),
                "app".into(),
                "--manage-script-name".into(),
                "--workers".into(),
                "4".into(),
                "--mount".into(),
                format!("/{}={}", tool.name, s(&src.join("app.py"))),
                "--die-on-term".into(),
                "--strict".into(),
                "--master".into(),
            ];
            let venv = tool.path("www/python/venv");
            if venv.exists() {
                command.extend(["--venv".into(), s(&venv)]);
            }
            let ini = tool.path("www/python/uwsgi.ini");
            if ini.exists() {
                command.extend(["--ini".into(), s(&ini)]);
            }
            Ok(Launch {
                command,
                cwd: Some(tool.home.clone()),
                run_dir: None,
                ignored_args: ignored(extra_args),
            })
        }
        WebServiceType::UwsgiPlain => {
            let ini = tool.path("uwsgi.ini");
            if !ini.exists() {
                return Err(TypeError::NotSetUp(format!(
                    "Could not find {}. Are you sure you have a proper uwsgi config setup in \
                     ~/uwsgi.ini?",
                    ini.display()
                )));
            }
            Ok(Launch {
                command: vec![
                    "/usr/bin/uwsgi".into(),
                    "--http-socket".into(),
                    format!(":{port}"),
                    "--logto".into(),
                    s(&tool.path("uwsgi.log")),
                    "--ini".into(),
                    s(&ini),
                    "--workers".into(),
                    "4".into(),
                    "--die-on-term".into(),
                    "--strict".into(),
                    "--master".into(),
                ],
                cwd: Some(tool.home.clone()),
                run_dir: None,
                ignored_args: ignored(extra_args),
            })
        }
        WebServiceType::Nodejs => {
            let package = tool.path("www/js/package.json");
            let text = std::fs::read_to_string(&package).map_err(|_| {
                TypeError::NotSetUp(format!(
                    "Could not find {}. Are you sure you have a proper nodejs application in \
                     ~/www/js?",
                    package.display()
                ))
            })?;
            let has_start = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("scripts")?.get("start").cloned())
                .is_some();
            if !has_start {
                return Err(TypeError::NotSetUp(format!(
                    "'start' script was not defined in {}. Are you sure you have a proper nodejs \
                     application in ~/www/js?",
                    package.display()
                )));
            }
            let npm = ["/usr/local/bin/npm", "/usr/bin/npm"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .ok_or_else(|| {
                    TypeError::NotSetUp(
                        "Cannot find npm (looked for /usr/local/bin/npm and /usr/bin/npm)".into(),
                    )
                })?;
            Ok(Launch {
                command: vec![npm.into(), "start".into()],
                cwd: Some(tool.path("www/js")),
                run_dir: None,
                ignored_args: ignored(extra_args),
            })
        }
    }
}

/// A directory only the tool can enter, under `$TMPDIR` (or `/tmp`).
fn private_dir(tool: &str) -> Result<tempfile::TempDir, TypeError> {
    tempfile::Builder::new()
        .prefix(&format!("webservice-{tool}-"))
        .tempdir()
        .map_err(|e| {
            TypeError::CannotPrepare(format!(
                "cannot create a directory in {}: {e}",
                std::env::temp_dir().display()
            ))
        })
}

/// lighttpd's configuration, as today's `BASIC_CONFIG_TEMPLATE`, with the
/// pid file in `run_dir` instead of the shared `/var/run/lighttpd`, and
/// without what Debian's lighttpd 1.4.69 no longer has in its base package:
/// `mod_compress` (gone; `mod_deflate` is a separate package), `ssl.engine`
/// (would load `mod_openssl`, another package) and `server.dir-listing`
/// (renamed; directory listings are off without `mod_dirlisting` anyway).
pub fn lighttpd_config(tool: &Tool, port: u16, run_dir: &Path) -> String {
    let home = tool.home.display();
    let run = run_dir.display();
    format!(
        r#"# Generated by webservice-runner for {user}; removed when the web service stops.
server.modules = (
  "mod_setenv",
  "mod_access",
  "mod_accesslog",
  "mod_alias",
  "mod_redirect",
  "mod_rewrite",
  "mod_fastcgi",
  "mod_cgi",
)

server.port = {port}
server.use-ipv6 = "disable"
server.username = "{user}"
server.groupname = "{group}"
server.core-files = "disable"
server.document-root = "{home}/public_html"
server.pid-file = "{run}/lighttpd.pid"
server.errorlog = "{home}/error.log"
server.breakagelog = "{home}/error.log"
server.follow-symlink = "enable"
server.max-connections = 300
server.stat-cache-engine = "simple"
server.event-handler = "linux-sysepoll"

index-file.names = ( "index.php", "index.html", "index.htm" )
url.access-deny = ( "~", ".inc" )
static-file.exclude-extensions = ( ".php", ".pl", ".fcgi" )

accesslog.use-syslog = "disable"

mimetype.assign = (
{mimetypes})

cgi.assign = (
  ".pl" => "/usr/bin/perl",
  ".py" => "/usr/bin/python3",
  ".pyc" => "/usr/bin/python3",
)
"#,
        user = tool.user,
        group = tool.group,
        mimetypes = MIME_TYPES
            .iter()
            .map(|(ext, ty)| format!("  \"{ext}\" => \"{ty}\",\n"))
            .collect::<String>(),
    )
}

/// The FastCGI PHP block of the `lighttpd` type (today's
/// `ENABLE_PHP_CONFIG_TEMPLATE`), its socket in `run_dir`.
pub fn php_config(run_dir: &Path) -> String {
    format!(
        r#"
fastcgi.server += ( ".php" =>
        ((
                "bin-path" => "/usr/bin/php-cgi",
                "socket" => "{run}/php.socket",
                "max-procs" => 2,
                "bin-environment" => (
                        "PHP_FCGI_CHILDREN" => "2",
                        "PHP_FCGI_MAX_REQUESTS" => "500"
                ),
                "bin-copy-environment" => (
                        "PATH", "SHELL", "USER"
                ),
                "broken-scriptfilename" => "enable",
                "allow-x-send-file" => "enable"
         ))
)
"#,
        run = run_dir.display()
    )
}

/// The file types lighttpd labels (the common part of today's much longer
/// list; anything else is served as `application/octet-stream`).
const MIME_TYPES: &[(&str, &str)] = &[
    (".tar.gz", "application/x-gtar-compressed"),
    (".gz", "application/gzip"),
    (".js", "application/javascript; charset=utf-8"),
    (".mjs", "application/javascript; charset=utf-8"),
    (".json", "application/json; charset=utf-8"),
    (".pdf", "application/pdf"),
    (".xml", "application/xml"),
    (".xhtml", "application/xhtml+xml"),
    (".rss", "application/x-rss+xml"),
    (".atom", "application/atom+xml"),
    (".zip", "application/zip"),
    (".wasm", "application/wasm"),
    (".tar", "application/x-tar"),
    (".bz2", "application/x-bzip"),
    (".xz", "application/x-xz"),
    (".7z", "application/x-7z-compressed"),
    (".mp3", "audio/mpeg"),
    (".ogg", "audio/ogg"),
    (".oga", "audio/ogg"),
    (".wav", "audio/x-wav"),
    (".flac", "audio/flac"),
    (".otf", "font/ttf"),
    (".ttf", "font/ttf"),
    (".woff", "font/woff"),
    (".woff2", "font/woff2"),
    (".gif", "image/gif"),
    (".jpeg", "image/jpeg"),
    (".jpg", "image/jpeg"),
    (".png", "image/png"),
    (".svg", "image/svg+xml"),
    (".svgz", "image/svg+xml"),
    (".webp", "image/webp"),
    (".ico", "image/vnd.microsoft.icon"),
    (".tif", "image/tiff"),
    (".tiff", "image/tiff"),
    (".bmp", "image/x-ms-bmp"),
    (".css", "text/css; charset=utf-8"),
    (".csv", "text/csv; charset=utf-8"),
    (".htm", "text/html"),
    (".html", "text/html"),
    (".md", "text/markdown; charset=utf-8"),
    (".txt", "text/plain; charset=utf-8"),
    (".log", "text/plain; charset=utf-8"),
    (".conf", "text/plain; charset=utf-8"),
    (".tsv", "text/tab-separated-values; charset=utf-8"),
    (".mp4", "video/mp4"),
    (".mpeg", "video/mpeg"),
    (".ogv", "video/ogg"),
    (".webm", "video/webm"),
    ("README", "text/plain; charset=utf-8"),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(home: &Path) -> Tool {
        Tool {
            name: "foo".into(),
            user: "tools.foo".into(),
            group: "tools.foo".into(),
            home: home.to_owned(),
        }
    }

    #[test]
    fn names_round_trip() {
        for name in TYPE_NAMES {
            assert_eq!(name.parse::<WebServiceType>().unwrap().name(), *name);
        }
        let e = "php".parse::<WebServiceType>().unwrap_err().to_string();
        assert!(e.contains("known types: lighttpd"), "{e}");
    }

    #[test]
    fn lighttpd_needs_public_html_and_appends_the_tools_config() {
        let home = tempfile::tempdir().unwrap();
        let t = tool(home.path());
        let e = prepare(WebServiceType::Lighttpd, &t, 8000, &[]).unwrap_err();
        assert!(matches!(e, TypeError::NotSetUp(_)), "{e}");
        std::fs::create_dir(home.path().join("public_html")).unwrap();
        std::fs::write(home.path().join(".lighttpd.conf"), "# mine\n").unwrap();
        let l = prepare(WebServiceType::Lighttpd, &t, 8000, &[]).unwrap();
        let config = std::fs::read_to_string(&l.command[2]).unwrap();
        assert!(config.contains("server.port = 8000"), "{config}");
        assert!(config.contains("php-cgi"), "{config}");
        assert!(config.trim_end().ends_with("# mine"), "{config}");
        let dir = l.run_dir.as_ref().unwrap().path().to_owned();
        drop(l);
        assert!(!dir.exists(), "the generated files are removed");
        let l = prepare(WebServiceType::LighttpdPlain, &t, 8000, &[]).unwrap();
        let config = std::fs::read_to_string(&l.command[2]).unwrap();
        assert!(!config.contains("php-cgi"), "{config}");
    }

    #[test]
    fn generic_needs_a_command_and_tomcat_is_refused() {
        let home = tempfile::tempdir().unwrap();
        let t = tool(home.path());
        assert_eq!(
            prepare(WebServiceType::Generic, &t, 1, &[]).unwrap_err(),
            TypeError::NoCommand
        );
        assert_eq!(
            prepare(WebServiceType::Tomcat, &t, 1, &[]).unwrap_err(),
            TypeError::TomcatUnsupported
        );
        let l = prepare(WebServiceType::Generic, &t, 1, &["srv".into()]).unwrap();
        assert_eq!(l.command, vec!["srv"]);
        assert_eq!(l.cwd.as_deref(), Some(home.path()));
    }

    #[test]
    fn uwsgi_python_uses_the_venv_and_ini_when_present() {
        let home = tempfile::tempdir().unwrap();
        let t = tool(home.path());
        assert!(prepare(WebServiceType::UwsgiPython, &t, 1, &[]).is_err());
        std::fs::create_dir_all(home.path().join("www/python/src")).unwrap();
        let l = prepare(WebServiceType::UwsgiPython, &t, 8080, &[]).unwrap();
        assert!(l.command.contains(&":8080".to_owned()));
        assert!(!l.command.contains(&"--venv".to_owned()));
        std::fs::create_dir_all(home.path().join("www/python/venv")).unwrap();
        std::fs::write(home.path().join("www/python/uwsgi.ini"), "[uwsgi]\n").unwrap();
        let l = prepare(WebServiceType::UwsgiPython, &t, 8080, &[]).unwrap();
        assert!(l.command.contains(&"--venv".to_owned()));
        assert_eq!(
            l.command.last().unwrap(),
            &format!("{}/www/python/uwsgi.ini", home.path().display())
        );
    }
}
