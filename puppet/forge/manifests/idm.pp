# @summary The identity host role: idm-web (the self-service app), rq-worker
#   (its background jobs) and the daily timers `sync-username-block` and
#   `expire-signups`.
#
# Secrets are never written into configuration files: given here (use an
# encrypted hiera backend) they go to files in /etc/forge/secrets, readable
# by root and the forge group, which the configuration names (`*_file`
# keys). Without `token_secret`, the key the package generated at
# installation (/etc/forge/secrets/idm-web-token) is used.
#
# Any key of idm-web's configuration (docs/idm-web.md) not covered by a
# parameter goes in `idm_web_settings`; rq-worker's (docs/rq.md) in
# `rq_worker_settings`.
#
# @param public_base_url The app's public URL (links in mails).
# @param http_listen idm-web's HTTP listener (behind the site's TLS proxy).
# @param admin_listen idm-web's admin listener.
# @param allowed_hosts Host headers accepted (empty: any).
# @param trusted_proxies Proxies whose X-Forwarded-For is believed.
# @param database_url The database (`sqlite://…` or `mysql://user:pw@host/db`).
#   Kept in a secret file because it may hold a password.
# @param ldap_url The LDAP server.
# @param ldap_starttls Use STARTTLS.
# @param ldap_bind_dn The DN idm-web binds as.
# @param ldap_bind_password Its password (a secret file).
# @param ldap_people_base Where accounts are created.
# @param ldap_uid_counter_dn The entry holding the next uidNumber.
# @param smtp_host Mail relay (idm-web and rq-worker).
# @param smtp_port Its port.
# @param smtp_tls `none`, `starttls` or `tls`.
# @param smtp_username SMTP user (empty: none).
# @param smtp_password SMTP password (a secret file for idm-web; an
#   environment file for rq-worker).
# @param mail_from Sender of mails.
# @param admin_recipients Who is told about new accounts.
# @param token_secret The activation-token key (at least 32 characters).
# @param idm_web_settings Further idm-web keys.
# @param worker_queues Queues rq-worker serves, in priority order (its
#   `[idm]` section names idm-web's configuration, so it runs the `idm.*`
#   jobs of `default` and `notification`).
# @param worker_concurrency Jobs rq-worker runs at once.
# @param worker_admin_listen rq-worker's admin listener.
# @param rq_worker_settings Further rq-worker keys.
# @param sync_username_block_calendar When the blocklist sync runs
#   (systemd OnCalendar=).
# @param expire_signups_calendar When expired signups are deleted.
# @param expire_signups_days Age in days after which unactivated signups go.
# @param timer_once_per_secs With several identity hosts: run each timer
#   job on one host per this many seconds (e.g. 72000 for the daily jobs;
#   idm-web's `--once-per`, a Redis lease), the others skip (and count as
#   done). Unset: every host runs its timers.
# @param textfile_dir The node exporter's textfile directory, where the
#   timers' last success and failure times are exported.
# @param config_change What a changed config file does to idm-web and
#   rq-worker: both read their configuration at start (SIGHUP only changes
#   rq-worker's log filter), so `restart` is the default, which is safe:
#   idm-web's sessions live in the database, rq-worker finishes or hands back
#   running jobs.
class forge::idm (
  String[1] $public_base_url,
  String[1] $http_listen = '127.0.0.1:8000',
  String[1] $admin_listen = '127.0.0.1:9108',
  Array[String[1]] $allowed_hosts = [],
  Array[String[1]] $trusted_proxies = ['127.0.0.1/32', '::1/128'],
  Sensitive[String[1]] $database_url = Sensitive('sqlite:///var/lib/forge/idm-web/idm-web.db'),
  String[1] $ldap_url = 'ldap://127.0.0.1:389',
  Boolean $ldap_starttls = false,
  String[1] $ldap_bind_dn = 'cn=admin,dc=example,dc=org',
  Optional[Sensitive[String[1]]] $ldap_bind_password = undef,
  String[1] $ldap_people_base = 'ou=people,dc=example,dc=org',
  String[1] $ldap_uid_counter_dn = 'cn=uidnumber-counter,dc=example,dc=org',
  String[1] $smtp_host = 'localhost',
  Integer[1, 65535] $smtp_port = 25,
  Enum['none', 'starttls', 'tls'] $smtp_tls = 'none',
  String $smtp_username = '',
  Optional[Sensitive[String[1]]] $smtp_password = undef,
  String[1] $mail_from = 'Forge accounts <noreply@example.org>',
  Array[String[1]] $admin_recipients = [],
  Optional[Sensitive[String[32]]] $token_secret = undef,
  Hash $idm_web_settings = {},
  Array[String[1]] $worker_queues = ['default', 'notification'],
  Integer[1] $worker_concurrency = 16,
  String[1] $worker_admin_listen = '127.0.0.1:9181',
  Hash $rq_worker_settings = {},
  String[1] $sync_username_block_calendar = 'daily',
  String[1] $expire_signups_calendar = 'daily',
  Integer[1] $expire_signups_days = 5,
  Optional[Integer[60]] $timer_once_per_secs = undef,
  String[1] $textfile_dir = '/var/lib/prometheus/node-exporter',
  Forge::Configchange $config_change = 'restart',
) {
  include forge

  # Secret files as the daemons see them (under root_dir when staging, so a
  # staged configuration checks with `--check-config` as it is).
  $secrets = "${forge::root_dir}${forge::secrets_dir}"

  forge::secret { 'idm-web-database-url':
    content => $database_url,
  }
  if $ldap_bind_password =~ NotUndef {
    forge::secret { 'idm-web-ldap-password':
      content => $ldap_bind_password,
    }
    $ldap_password_file = "${secrets}/idm-web-ldap-password"
  } else {
    $ldap_password_file = undef
  }
  if $smtp_password =~ NotUndef {
    forge::secret { 'idm-web-smtp-password':
      content => $smtp_password,
    }
    # rq-worker takes it from its environment (FORGE_RQ_WORKER_MAIL__PASSWORD).
    forge::secret { 'rq-worker.env':
      content => Sensitive("FORGE_RQ_WORKER_MAIL__PASSWORD=${smtp_password.unwrap}"),
    }
    forge::dropin { 'rq-worker.service':
      unit    => 'rq-worker.service',
      content => "[Service]\nEnvironmentFile=${secrets}/rq-worker.env\n",
      before  => Forge::Daemon['rq-worker'],
    }
    $smtp_password_file = "${secrets}/idm-web-smtp-password"
  } else {
    $smtp_password_file = undef
  }
  if $token_secret =~ NotUndef {
    forge::secret { 'idm-web-token':
      content => $token_secret,
    }
  }

  $smtp_user = $smtp_username ? {
    ''      => undef,
    default => $smtp_username,
  }

  forge::daemon { 'idm-web':
    config_change => $config_change,
    settings      => forge::deep_merge({
        'http'     => {
          'listen'          => $http_listen,
          'public_base_url' => $public_base_url,
          'allowed_hosts'   => $allowed_hosts,
          'trusted_proxies' => $trusted_proxies,
        },
        'admin'    => {
          'listen' => $admin_listen,
        } + $forge::admin_token_section,
        'database' => {
          'url_file' => "${secrets}/idm-web-database-url",
        },
        'ldap'     => {
          'url'                => $ldap_url,
          'starttls'           => $ldap_starttls,
          'bind_dn'            => $ldap_bind_dn,
          'bind_password_file' => $ldap_password_file,
          'people_base'        => $ldap_people_base,
          'uid_counter_dn'     => $ldap_uid_counter_dn,
        },
        'mail'     => {
          'transport'        => 'smtp',
          'smtp_host'        => $smtp_host,
          'smtp_port'        => $smtp_port,
          'tls'              => $smtp_tls,
          'username'         => $smtp_username,
          'password_file'    => $smtp_password_file,
          'from'             => $mail_from,
          'admin_recipients' => $admin_recipients,
        },
        'tokens'   => {
          'secret_file' => "${secrets}/idm-web-token",
        },
        'signup'   => {
          'expiry_days' => $expire_signups_days,
        },
        'redis'    => $forge::redis_settings,
        'log'      => $forge::log_settings,
    }, $idm_web_settings),
  }

  # rq-worker applies only its log filter on SIGHUP: a changed file restarts
  # it (safe: running jobs finish or are handed back to their queues).
  forge::daemon { 'rq-worker':
    config_change => $config_change,
    settings      => forge::deep_merge({
        'worker' => {
          'queues'      => $worker_queues,
          'concurrency' => $worker_concurrency,
        },
        'admin'  => {
          'listen' => $worker_admin_listen,
        } + $forge::admin_token_section,
        'mail'   => {
          'smtp_host' => $smtp_host,
          'smtp_port' => $smtp_port,
          'tls'       => $smtp_tls,
          'from'      => $mail_from,
          'username'  => $smtp_user,
        },
        'idm'    => {
          'config' => "${forge::etc}/idm-web.toml",
        },
        'redis'  => $forge::redis_settings,
        'log'    => $forge::log_settings,
    }, $rq_worker_settings),
  }

  # A changed secret (or rq-worker's environment) restarts the daemons that
  # read it at start.
  Forge::Secret <| tag == 'forge::idm' |> ~> Forge::Daemon['idm-web', 'rq-worker']
  Forge::Dropin <| title == 'rq-worker.service' |> ~> Forge::Daemon['rq-worker']

  # The timers' schedules, the expiry age and the textfile directory, where
  # they differ from the units' defaults (daily, 5 days, the node exporter's
  # Debian default): one drop-in per unit.
  $textfile_env = $textfile_dir ? {
    '/var/lib/prometheus/node-exporter' => '',
    default                              => "Environment=FORGE_TEXTFILE_DIR=${textfile_dir}\n",
  }
  # With several identity hosts, each timer runs on one of them per period
  # (`--once-per`: a Redis lease), and another takes over when it is gone.
  $once_per = $timer_once_per_secs ? {
    undef   => '',
    default => " --once-per ${timer_once_per_secs}",
  }
  $idm_cmd = "/usr/bin/idm-web --config /etc/forge/idm-web.toml${once_per}"
  $sync_exec = $once_per ? {
    ''      => '',
    default => "ExecStart=\nExecStart=${idm_cmd} sync-username-block\n",
  }
  $expire_exec = "${expire_signups_days}${once_per}" ? {
    '5'     => '',
    default => "ExecStart=\nExecStart=${idm_cmd} expire-signups --days ${expire_signups_days}\n",
  }
  $dropins = {
    'idm-web-sync-username-block.timer'   => $sync_username_block_calendar ? {
      'daily' => '',
      default => "[Timer]\nOnCalendar=\nOnCalendar=${sync_username_block_calendar}\n",
    },
    'idm-web-expire-signups.timer'        => $expire_signups_calendar ? {
      'daily' => '',
      default => "[Timer]\nOnCalendar=\nOnCalendar=${expire_signups_calendar}\n",
    },
    'idm-web-sync-username-block.service' => "${textfile_env}${sync_exec}",
    'idm-web-expire-signups.service'      => "${textfile_env}${expire_exec}",
    'forge-job-failed@.service'           => $textfile_env ? {
      ''      => '',
      default => "${textfile_env}ReadWritePaths=-${textfile_dir}\n",
    },
  }
  $dropins.each |String $unit, String $body| {
    if $body != '' {
      $section = $unit ? {
        /\.timer$/ => '',
        default    => "[Service]\n",
      }
      forge::dropin { $unit:
        unit    => $unit,
        content => "${section}${body}",
      }
    }
  }

  if $forge::manage_services {
    ['idm-web-sync-username-block.timer', 'idm-web-expire-signups.timer'].each |String $timer| {
      service { $timer:
        ensure    => running,
        enable    => true,
        provider  => 'systemd',
        require   => Forge::Daemon['idm-web'],
        subscribe => $forge::package_dep,
      }
    }
  }
}
