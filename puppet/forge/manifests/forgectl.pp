# @summary The operator CLI's inventory (/etc/forge/forgectl.toml): every
#   host with its daemons' admin URLs, and the Redis Sentinels, so
#   `forgectl status` shows at a glance whether all hosts agree and
#   `forgectl failover` can promote a replica. Include it where operators
#   work (bastions, the proxies).
#
# @example hiera
#   forge::forgectl::hosts:
#     - name: proxy-01
#       admin: ['http://proxy-01.example.org:8081', 'http://proxy-01.example.org:9282']
#
# @param hosts Every host: `name` and `admin` (its daemons' admin URLs).
# @param settings Further keys (docs/forgectl.md), merged over the rest.
class forge::forgectl (
  Array[Struct[{ name => String[1], admin => Array[String[1]] }]] $hosts = [],
  Hash $settings = {},
) {
  include forge

  $path = "${forge::etc}/forgectl.toml"
  $header = @("HEADER")
    # ${forge::config_dir}/forgectl.toml — managed by Puppet (forge::forgectl).
    | HEADER
  file { $path:
    ensure  => file,
    owner   => 'root',
    group   => $forge::group,
    mode    => '0644',
    content => "${header}\n${forge::to_toml(forge::deep_merge({
      'hosts' => $hosts,
      'redis' => $forge::redis_settings,
    }, $settings))}",
    require => File[$forge::etc],
  }
}
