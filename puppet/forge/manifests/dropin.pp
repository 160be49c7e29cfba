# @summary A systemd drop-in (`/etc/systemd/system/<unit>.d/puppet.conf`)
#   adjusting a unit the package ships, for settings that depend on
#   parameters (schedules, paths). systemd is reloaded by the service
#   provider before the unit is next started. One per unit.
#
# @param unit The unit, e.g. `webservicemonitor.service`.
# @param content The drop-in's text.
define forge::dropin (
  String[1] $unit,
  String[1] $content,
) {
  include forge

  $dir = "${forge::root_dir}/etc/systemd/system/${unit}.d"
  file { $dir:
    ensure => directory,
    owner  => 'root',
    group  => 'root',
    mode   => '0755',
  }
  file { "${dir}/puppet.conf":
    ensure  => file,
    owner   => 'root',
    group   => 'root',
    mode    => '0644',
    content => "# Managed by Puppet (forge module).\n${content}",
    require => File[$dir],
  }
}
