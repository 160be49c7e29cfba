# @summary forge's shared part: the package, the forge user, /etc/forge and
#   the settings every daemon shares (Redis, logging).
#
# Include a role class instead of this one: forge::proxy, forge::monitor or
# forge::idm (a host may have several). Every parameter can be set in hiera
# as `forge::<name>`.
#
# Live state (which proxy is active, the Redis master, routes) is never
# managed here: the daemons find the master through Sentinel, and
# registration clients read live.toml (forge::live), which lists every
# proxy and so does not change on a failover.
#
# @example A proxy host (hiera)
#   forge::redis_sentinels: ['proxy-01.example.org:26379', 'proxy-02.example.org:26379']
#   forge::proxy::default_upstream: 'http://k8s-ingress.example.org:30000'
#   forge::proxy::domains: ['toolforge.org']
#
# @param manage_package Install the `forge` Debian package (binaries, units,
#   default configs).
# @param package_name The package's name.
# @param package_ensure `installed`, `latest` or a version.
# @param package_source A `.deb` file on the host to install with dpkg
#   instead of from an apt repository (unset: apt).
# @param manage_user Make sure the forge system user and group exist (the
#   package creates them too).
# @param user The system user the daemons run as (the units say `forge`).
# @param group Group owning configuration and secret files; the daemons read
#   them through it.
# @param manage_services Enable and start the role's units and timers (off:
#   only files are written, e.g. to stage a configuration).
# @param root_dir Prefix of every file path (default: none). For staging and
#   tests: render the whole configuration under another directory.
# @param redis_url The Redis every daemon uses when no Sentinels are given.
# @param redis_sentinels Sentinel addresses (`host:port`); when set, daemons
#   follow the master these name, so a failover needs no Puppet run.
# @param redis_service_name The Sentinel master name.
# @param redis_command_timeout_ms Timeout of every Redis command.
# @param redis_connect_timeout_ms Redis connection timeout.
# @param log_format `text` (the journal adds timestamps) or `json`.
# @param log_filter Default log filter of every daemon (`info`,
#   `warn,dynamicproxy=debug`, …); change it at run time with
#   `PUT /log-filter` on the admin listener instead of a Puppet run.
# @param admin_token The admin token every daemon's changing admin endpoints
#   (`PUT /log-filter`, the proxy's `/list?backends=1`) need, at least 16
#   characters; written to /etc/forge/secrets/admin-token. Unset: those
#   endpoints are refused (docs/security.md).
class forge (
  Boolean $manage_package = true,
  String[1] $package_name = 'forge',
  String[1] $package_ensure = 'installed',
  Optional[String[1]] $package_source = undef,
  Boolean $manage_user = true,
  String[1] $user = 'forge',
  String[1] $group = 'forge',
  Boolean $manage_services = true,
  String $root_dir = '',
  String[1] $redis_url = 'redis://127.0.0.1:6379',
  Array[String[1]] $redis_sentinels = [],
  String[1] $redis_service_name = 'forge',
  Integer[1] $redis_command_timeout_ms = 2000,
  Integer[1] $redis_connect_timeout_ms = 2000,
  Forge::Logformat $log_format = 'text',
  String[1] $log_filter = 'info',
  Optional[Sensitive[String[16]]] $admin_token = undef,
) {
  # The `[redis]` section of every daemon.
  $redis_settings = {
    'url'                => $redis_url,
    'sentinels'          => $redis_sentinels,
    'service_name'       => $redis_service_name,
    'command_timeout_ms' => $redis_command_timeout_ms,
    'connect_timeout_ms' => $redis_connect_timeout_ms,
  }
  # The `[log]` section of every daemon.
  $log_settings = {
    'format' => $log_format,
    'filter' => $log_filter,
  }
  # The units read /etc/forge; root_dir only moves everything for staging.
  $config_dir = '/etc/forge'
  $etc = "${root_dir}${config_dir}"
  $secrets_dir = "${config_dir}/secrets"

  if $manage_user {
    group { $group:
      ensure => present,
      system => true,
    }
    user { $user:
      ensure     => present,
      system     => true,
      gid        => $group,
      home       => '/nonexistent',
      managehome => false,
      shell      => '/usr/sbin/nologin',
      comment    => 'forge daemons',
    }
  }

  if $manage_package {
    if $package_source =~ NotUndef {
      package { $package_name:
        ensure   => $package_ensure,
        provider => 'dpkg',
        source   => $package_source,
      }
    } else {
      package { $package_name:
        ensure => $package_ensure,
      }
    }
    $package_dep = [Package[$package_name]]
  } else {
    $package_dep = []
  }

  file { $etc:
    ensure  => directory,
    owner   => 'root',
    group   => 'root',
    mode    => '0755',
    require => $package_dep,
  }
  file { "${root_dir}${secrets_dir}":
    ensure => directory,
    owner  => 'root',
    group  => $group,
    mode   => '0750',
  }

  # The admin token file, and the keys that point every daemon at it:
  # top-level for dynamicproxy and proxylistener, `[admin]` for the others.
  if $admin_token =~ NotUndef {
    $admin_token_file = "${root_dir}${secrets_dir}/admin-token"
    forge::secret { 'admin-token':
      content => $admin_token,
    }
    $admin_token_top = { 'admin_token_file' => $admin_token_file }
    $admin_token_section = { 'token_file' => $admin_token_file }
  } else {
    $admin_token_top = {}
    $admin_token_section = {}
  }
}
