# @summary The proxy host role: dynamicproxy (the front proxy),
#   proxylistener (registrations) and, unless turned off, the local Redis and
#   Sentinel (forge::redis).
#
# Which proxy host is active is live state: it is not a parameter. Both
# proxies run everything; registrations reach the Redis master that the
# Sentinels name, and each dynamicproxy follows its local Redis (a replica
# follows the master).
#
# Typed parameters cover what sites usually set. Any other key of a daemon's
# configuration (see docs/dynamicproxy.md, docs/proxylistener.md) goes in
# `dynamicproxy_settings` / `proxylistener_settings`, merged over the rest.
#
# @param default_upstream Where requests matching no route go (the
#   Kubernetes ingress), `http://host:port`. Required.
# @param domains Served domains: `<tool>.<domain>` is routed by tool.
# @param outside_domain Hosts outside every domain: `reject` (421) or
#   `default` (to the default upstream).
# @param forwarded_for Append the client address to X-Forwarded-For.
# @param listen_http The proxy's HTTP listener (port 80 needs the unit's
#   CAP_NET_BIND_SERVICE, which it has).
# @param listen_https The TLS listener (e.g. `0.0.0.0:443`); unset: no TLS
#   (a terminator in front forwards to `listen_http`).
# @param tls_dir Directory of `<name>.crt` + `<name>.key` pairs the TLS
#   listener serves (chosen by SNI).
# @param tls_certificates Certificates Puppet puts in `tls_dir`:
#   `{ <name> => { cert => PEM chain, key => PEM key } }`, Sensitive as a
#   whole (hiera values are converted). Leave empty when another tool (e.g.
#   an ACME client) maintains the directory.
# @param redirect_http With TLS on, answer plain HTTP with a redirect to
#   https.
# @param hsts_max_age_s `Strict-Transport-Security` max-age on TLS
#   responses (0: none).
# @param proxy_admin_listen The proxy's admin listener (/list for
#   webservicemonitor, /metrics, /healthz); reachable by the monitor host,
#   so on every address here (the binary's own default is loopback).
#   Changing endpoints on it need forge::admin_token.
# @param routes_startup While Redis is unreachable at start: `snapshot`
#   (serve the last good table from disk) or `wait`.
# @param snapshot_path Where the route snapshot is kept.
# @param routes_redis_url The Redis dynamicproxy reads routes from: the
#   local instance, a replica that follows the master (its keyspace
#   notifications include replicated writes), so each proxy keeps its routes
#   whatever happens to the other proxy host (`routes.read_url`; `[redis]`
#   names the master through the Sentinels as for every daemon).
# @param dynamicproxy_settings Further dynamicproxy keys.
# @param registration_listen proxylistener's registration listener.
# @param registration_admin_listen proxylistener's admin listener.
# @param canonical_domain Domain of `redirect:` entries (canonical
#   registrations).
# @param project Unix user prefix of tools (`tools` for `tools.<name>`).
# @param backend_networks Networks a backend may be registered in besides
#   the registering host's own address.
# @param min_replicas Replicas a registration must reach (Redis WAIT) before
#   it is acknowledged; `auto` (the default): 1 where the master has
#   replicas, 0 where it has none — so a failover loses no acknowledged route.
# @param proxylistener_settings Further proxylistener keys.
# @param manage_redis Configure the local Redis and Sentinel (forge::redis).
# @param config_change What a changed config file does: `reload` (SIGHUP),
#   `restart` or `none`.
class forge::proxy (
  String[1] $default_upstream,
  Array[String[1]] $domains = [],
  Enum['reject', 'default'] $outside_domain = 'reject',
  Boolean $forwarded_for = false,
  String[1] $listen_http = '0.0.0.0:80',
  Optional[String[1]] $listen_https = undef,
  String[1] $tls_dir = '/etc/forge/tls',
  Sensitive[Hash[String[1], Struct[{ cert => String[1], key => String[1] }]]] $tls_certificates = Sensitive({}),
  Boolean $redirect_http = true,
  Integer[0] $hsts_max_age_s = 31622400,
  String[1] $proxy_admin_listen = '0.0.0.0:8081',
  Enum['wait', 'snapshot'] $routes_startup = 'snapshot',
  String[1] $snapshot_path = '/var/lib/forge/dynamicproxy/routes.snapshot',
  String[1] $routes_redis_url = 'redis://127.0.0.1:6379',
  Hash $dynamicproxy_settings = {},
  String[1] $registration_listen = '0.0.0.0:8282',
  String[1] $registration_admin_listen = '127.0.0.1:9282',
  String[1] $canonical_domain = 'toolforge.org',
  String[1] $project = 'tools',
  Array[String[1]] $backend_networks = [],
  Variant[Integer[0], Enum['auto']] $min_replicas = 'auto',
  Hash $proxylistener_settings = {},
  Boolean $manage_redis = true,
  Forge::Configchange $config_change = 'reload',
) {
  include forge

  if $manage_redis {
    include forge::redis
  }

  if $listen_https =~ NotUndef {
    $tls = {
      'listen_https' => $listen_https,
      'tls'          => {
        'dir'            => "${forge::root_dir}${tls_dir}",
        'redirect_http'  => $redirect_http,
        'hsts_max_age_s' => $hsts_max_age_s,
      },
    }
  } else {
    $tls = {}
  }
  $certificates = $tls_certificates.unwrap
  unless $certificates.empty {
    file { "${forge::root_dir}${tls_dir}":
      ensure  => directory,
      owner   => 'root',
      group   => $forge::group,
      mode    => '0750',
      require => File[$forge::etc],
    }
    $certificates.each |String $name, Hash $pair| {
      file { "${forge::root_dir}${tls_dir}/${name}.crt":
        ensure  => file,
        owner   => 'root',
        group   => $forge::group,
        mode    => '0644',
        content => $pair['cert'],
        notify  => Forge::Daemon['dynamicproxy'],
      }
      forge::secret { "tls/${name}.key":
        content => Sensitive($pair['key']),
        path    => "${tls_dir}/${name}.key",
        notify  => Forge::Daemon['dynamicproxy'],
      }
    }
  }

  forge::daemon { 'dynamicproxy':
    config_change => $config_change,
    settings      => forge::deep_merge({
        'listen_http'      => $listen_http,
        'listen_admin'     => $proxy_admin_listen,
        'default_upstream' => $default_upstream,
        'domains'          => $domains,
        'outside_domain'   => $outside_domain,
        'forwarded_for'    => $forwarded_for,
        'routes'           => {
          'startup'       => $routes_startup,
          'snapshot_path' => $snapshot_path,
          'read_url'      => $routes_redis_url,
        },
        'redis'            => $forge::redis_settings,
        'log'              => $forge::log_settings,
    } + $tls + $forge::admin_token_top, $dynamicproxy_settings),
  }

  forge::daemon { 'proxylistener':
    config_change => $config_change,
    settings      => forge::deep_merge({
        'listen'           => $registration_listen,
        'listen_admin'     => $registration_admin_listen,
        'canonical_domain' => $canonical_domain,
        'project'          => $project,
        'policy'           => {
          'backend_networks' => $backend_networks,
        },
        'durability'       => {
          'min_replicas' => $min_replicas,
        },
        'redis'            => $forge::redis_settings,
        'log'              => $forge::log_settings,
    } + $forge::admin_token_top, $proxylistener_settings),
  }
}
