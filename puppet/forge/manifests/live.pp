# @summary The live-state file registration clients read
#   (/etc/forge/live.toml): every proxy host that accepts registrations and
#   the Redis Sentinels. Include it where web services start
#   (webservice-runner, portreleaser: the job execution hosts) and point
#   them at it (`--active-proxy /etc/forge/live.toml` or
#   `FORGE_ACTIVE_PROXY`).
#
# The list names *every* proxy, in order of preference, not the active one:
# any proxylistener writes to the current Redis master, so the file does
# not change on a failover and Puppet renders it only when hosts are added
# or removed. Today's single-host /etc/active-proxy is not managed here.
#
# @param registration_hosts Registration endpoints, `host[:port]` (port
#   8282 by default), tried in order. Empty: registration disabled.
# @param with_redis Also write the `[redis]` section (the Sentinels from
#   `forge::redis_sentinels`), for tools that need the master.
class forge::live (
  Array[String[1]] $registration_hosts,
  Boolean $with_redis = true,
) {
  include forge

  $redis = $with_redis ? {
    true    => { 'redis' => $forge::redis_settings },
    default => {},
  }
  $header = @("HEADER")
    # ${forge::config_dir}/live.toml — managed by Puppet (forge::live): every
    # proxy host that accepts registrations. Not changed on a failover.
    | HEADER
  file { "${forge::etc}/live.toml":
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => "${header}\n${forge::to_toml({ 'registration_hosts' => $registration_hosts } + $redis)}",
    require => File[$forge::etc],
  }
}
