# @summary The monitor host role: webservicemonitor, which restarts tools'
#   web services that should run but don't.
#
# Any key of webservicemonitor's configuration (docs/webservicemonitor.md)
# not covered by a parameter goes in `settings`, merged over the rest.
#
# @param proxy_list_url The proxy's `/list` (dynamicproxy's admin listener):
#   what is registered.
# @param tools_root Where tools' home directories are; the unit may write
#   there (the restart command it runs updates service.manifest).
# @param project Unix user prefix of tools.
# @param min_uid Lowest uid counted as a tool.
# @param scheduler_backend `gridengine` or `command`.
# @param interval_secs Seconds between reconciliation passes.
# @param concurrency Tools checked at once.
# @param health_probe `off`, `tcp` or `http`: how a registered backend is
#   checked before it counts as alive.
# @param max_restarts Restarts of one tool within `throttle_window_secs`
#   before the monitor gives up on it (and reports it).
# @param throttle_window_secs The throttle window.
# @param ip_address_allow Further addresses the unit may reach (systemd
#   `IPAddressAllow=`); the unit allows loopback and the private ranges
#   only. `['any']` lifts the restriction.
# @param admin_listen The admin listener (/healthz, /status, /metrics).
# @param settings Further keys.
# @param config_change What a changed config file does: `reload` (SIGHUP),
#   `restart` or `none`.
class forge::monitor (
  String[1] $proxy_list_url = 'http://127.0.0.1:8081/list',
  String[1] $tools_root = '/data/project',
  String[1] $project = 'tools',
  Integer[0] $min_uid = 50000,
  Enum['gridengine', 'command'] $scheduler_backend = 'gridengine',
  Integer[1] $interval_secs = 60,
  Integer[1] $concurrency = 32,
  Enum['off', 'tcp', 'http'] $health_probe = 'tcp',
  Integer[1] $max_restarts = 3,
  Integer[1] $throttle_window_secs = 3600,
  Array[String[1]] $ip_address_allow = [],
  String[1] $admin_listen = '127.0.0.1:9107',
  Hash $settings = {},
  Forge::Configchange $config_change = 'reload',
) {
  include forge

  forge::daemon { 'webservicemonitor':
    config_change => $config_change,
    settings      => forge::deep_merge({
        'tools'     => {
          'root'    => $tools_root,
          'project' => $project,
          'min_uid' => $min_uid,
        },
        'scheduler' => {
          'backend' => $scheduler_backend,
        },
        'proxy'     => {
          'list_url' => $proxy_list_url,
        },
        'health'    => {
          'probe' => $health_probe,
        },
        'throttle'  => {
          'max_restarts' => $max_restarts,
          'window_secs'  => $throttle_window_secs,
        },
        'pass'      => {
          'interval_secs' => $interval_secs,
          'concurrency'   => $concurrency,
        },
        'admin'     => {
          'listen' => $admin_listen,
        } + $forge::admin_token_section,
        'redis'     => $forge::redis_settings,
        'log'       => $forge::log_settings,
    }, $settings),
  }

  # Drop-in for what differs from the unit's defaults.
  $rw = $tools_root ? {
    '/data/project' => '',
    default         => "ReadWritePaths=-${tools_root}\n",
  }
  $ip = $ip_address_allow ? {
    []      => '',
    default => "IPAddressAllow=${ip_address_allow.join(' ')}\n",
  }
  if "${rw}${ip}" != '' {
    forge::dropin { 'webservicemonitor.service':
      unit    => 'webservicemonitor.service',
      content => "[Service]\n${rw}${ip}",
      before  => Forge::Daemon['webservicemonitor'],
    }
  }
}
