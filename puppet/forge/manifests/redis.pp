# @summary The proxy host's local Redis and Sentinel (Debian's
#   `redis-server@forge` and `redis-sentinel@forge` instances).
#
# Only the static part of Redis's configuration is managed
# (/etc/redis/forge-static.conf, replaced on every run). Who is master is
# live state, owned by the Sentinels, which rewrite /etc/redis/redis-forge.conf
# and /etc/redis/sentinel-forge.conf on a failover: Puppet writes those two
# only when they don't exist (`replace => false`), naming `initial_master`
# once. A later change of `initial_master` therefore changes nothing on
# running hosts; a failover is `redis-cli -p 26379 SENTINEL FAILOVER forge`,
# never a Puppet run.
#
# @param initial_master Host name of the proxy whose Redis is master when the
#   pair is first set up.
# @param bind Addresses Redis and Sentinel listen on; the other proxy and
#   every daemon using Redis must reach them.
# @param port Redis's port.
# @param sentinel_port Sentinel's port.
# @param quorum Sentinels that must agree the master is down.
# @param down_after_ms How long the master must be unreachable to be down.
# @param failover_timeout_ms Sentinel's failover timeout.
# @param min_replicas_to_write Refuse writes on a master with fewer
#   connected replicas than this (0: off). Default: 1 where there are
#   replicas (Sentinels are configured, `forge::redis_sentinels`), else 0 —
#   a master cut off from every replica then stops accepting writes after
#   `min-replicas-max-lag` (10 s) instead of taking writes a failover loses.
# @param appendonly Keep an append-only file (routes survive a restart).
# @param notify_keyspace_events Keyspace notifications dynamicproxy follows;
#   it needs at least `Kghsxe`.
# @param owner User (and group) owning the files Redis and Sentinel rewrite.
# @param manage_packages Install redis-server and redis-sentinel.
# @param disable_default_instances Stop and disable Debian's default
#   `redis-server` and `redis-sentinel` (they use the same ports).
class forge::redis (
  String[1] $initial_master,
  Array[String[1]] $bind = ['127.0.0.1', $facts['networking']['ip']],
  Integer[1, 65535] $port = 6379,
  Integer[1, 65535] $sentinel_port = 26379,
  Integer[1] $quorum = 2,
  Integer[1] $down_after_ms = 5000,
  Integer[1] $failover_timeout_ms = 60000,
  Optional[Integer[0]] $min_replicas_to_write = undef,
  Boolean $appendonly = true,
  String[1] $notify_keyspace_events = 'Kghsxe',
  String[1] $owner = 'redis',
  Boolean $manage_packages = true,
  Boolean $disable_default_instances = true,
) {
  include forge

  if $min_replicas_to_write =~ Undef {
    $replicas_to_write = $forge::redis_sentinels.empty ? {
      true    => 0,
      default => 1,
    }
  } else {
    $replicas_to_write = $min_replicas_to_write
  }
  $etc = "${forge::root_dir}/etc/redis"
  $is_master = $initial_master in [$facts['networking']['fqdn'], $facts['networking']['hostname']]
  $static = {
    'bind'                   => $bind.unique,
    'port'                   => $port,
    'min_replicas_to_write'  => $replicas_to_write,
    'appendonly'             => $appendonly,
    'notify_keyspace_events' => $notify_keyspace_events,
    'service_name'           => $forge::redis_service_name,
  }
  $instance = {
    'etc'            => '/etc/redis',
    'is_master'      => $is_master,
    'initial_master' => $initial_master,
    'port'           => $port,
  }
  $sentinel = {
    'bind'                => $bind.unique,
    'service_name'        => $forge::redis_service_name,
    'initial_master'      => $initial_master,
    'port'                => $port,
    'sentinel_port'       => $sentinel_port,
    'quorum'              => $quorum,
    'down_after_ms'       => $down_after_ms,
    'failover_timeout_ms' => $failover_timeout_ms,
  }

  if $manage_packages {
    package { ['redis-server', 'redis-sentinel']:
      ensure => installed,
      before => File[$etc],
    }
  }

  file { $etc:
    ensure => directory,
  }
  file { "${etc}/forge-static.conf":
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => epp('forge/redis-static.conf.epp', $static),
  }
  # Rewritten by Redis/Sentinel at failover: created once, never replaced.
  file { "${etc}/redis-forge.conf":
    ensure  => file,
    replace => false,
    owner   => $owner,
    group   => $owner,
    mode    => '0640',
    content => epp('forge/redis-instance.conf.epp', $instance),
  }
  file { "${etc}/sentinel-forge.conf":
    ensure  => file,
    replace => false,
    owner   => $owner,
    group   => $owner,
    mode    => '0640',
    content => epp('forge/sentinel.conf.epp', $sentinel),
  }
  # Let Redis persist what Sentinel tells it (CONFIG REWRITE of replicaof).
  forge::dropin { 'redis-server@forge.service':
    unit    => 'redis-server@forge.service',
    content => "[Service]\nReadWritePaths=/etc/redis\n",
  }

  if $forge::manage_services {
    if $disable_default_instances {
      service { ['redis-server.service', 'redis-sentinel.service']:
        ensure => stopped,
        enable => false,
        before => Service['redis-server@forge.service', 'redis-sentinel@forge.service'],
      }
    }
    service { 'redis-server@forge.service':
      ensure    => running,
      enable    => true,
      provider  => 'systemd',
      subscribe => [File["${etc}/forge-static.conf"], Forge::Dropin['redis-server@forge.service']],
      require   => File["${etc}/redis-forge.conf"],
    }
    service { 'redis-sentinel@forge.service':
      ensure  => running,
      enable  => true,
      require => [File["${etc}/sentinel-forge.conf"], Service['redis-server@forge.service']],
    }
  }
}
