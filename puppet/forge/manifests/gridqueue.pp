# @summary A Grid Engine web queue set up for forge's web services: jobs are
#   ended with SIGTERM (so webservice-runner unregisters and stops its
#   server) and every job's end runs portreleaser on the exec host (so a
#   killed runner's route is removed too).
#
# Applied on a host with the Grid Engine admin client (`qconf`) to a queue
# that already exists (e.g. `webgrid-lighttpd`, `webgrid-generic`); only the
# two attributes below are changed, the rest of the queue is left alone.
# See docs/migration.md ("Grid web services").
#
# @param queue The queue's name (defaults to the title).
# @param terminate_method What `qdel` sends: `SIGTERM` lets the runner clean
#   up; Grid Engine's default is SIGKILL.
# @param epilog Run after each job, as the job's user, on the exec host.
# @param qconf The `qconf` executable.
define forge::gridqueue (
  String[1] $queue = $title,
  String[1] $terminate_method = 'SIGTERM',
  String[1] $epilog = '/usr/bin/portreleaser',
  String[1] $qconf = '/usr/bin/qconf',
) {
  $attributes = {
    'terminate_method' => $terminate_method,
    'epilog'           => $epilog,
  }
  $attributes.each |String $attribute, String $value| {
    exec { "forge-gridqueue-${queue}-${attribute}":
      command  => "${qconf} -mattr queue ${attribute} '${value}' ${queue}",
      unless   => "${qconf} -sq ${queue} | grep -qE '^${attribute}[[:space:]]+${value}\$'",
      provider => 'shell',
      path     => ['/usr/bin', '/bin'],
    }
  }
}
