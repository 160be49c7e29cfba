# @summary One forge daemon: its configuration file, rendered from a
#   settings hash, and its systemd unit, enabled and running.
#
# @param settings The whole configuration (every key the daemon accepts; an
#   unknown key stops the daemon at start-up, with the file and line).
# @param service The systemd unit.
# @param config_change What a changed file does to the running daemon:
#   `reload` (SIGHUP; keys that need a restart are logged), `restart` or
#   `none`.
# @param ensure `running` or `stopped`.
# @param enable Start at boot.
define forge::daemon (
  Hash $settings,
  String[1] $service = "${title}.service",
  Forge::Configchange $config_change = 'reload',
  Enum['running', 'stopped'] $ensure = 'running',
  Boolean $enable = true,
) {
  include forge

  $path = "${forge::etc}/${title}.toml"
  $header = @("HEADER")
    # ${forge::config_dir}/${title}.toml — managed by Puppet (forge module);
    # local changes are overwritten. Keys: /usr/share/doc/forge/configuration.md.
    # Check: ${title} --config ${forge::config_dir}/${title}.toml --check-config
    | HEADER

  file { $path:
    ensure  => file,
    owner   => 'root',
    group   => $forge::group,
    mode    => '0640',
    content => "${header}\n${forge::to_toml($settings)}",
    require => File[$forge::etc],
  }

  if $forge::manage_services {
    $restart = $config_change ? {
      'reload' => "/bin/systemctl reload ${service}",
      default  => undef,
    }
    $subscribe = $config_change ? {
      'none'  => $forge::package_dep,
      default => $forge::package_dep + [File[$path]],
    }
    service { $service:
      ensure    => $ensure,
      enable    => $enable,
      provider  => 'systemd',
      restart   => $restart,
      subscribe => $subscribe,
    }
  }
}
