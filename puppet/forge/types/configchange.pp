# @summary What Puppet does to a running daemon when its config file changes:
#   `reload` (SIGHUP, the daemon applies what it can), `restart`, or `none`.
type Forge::Configchange = Enum['reload', 'restart', 'none']
