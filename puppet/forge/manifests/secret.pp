# @summary A secret a daemon reads from a file (`*_file` keys), readable by
#   root and the forge group only; never part of a configuration file.
#
# @param content The secret. Keep it in eyaml or another encrypted backend.
# @param path Where it goes (under forge::config_dir/secrets by default).
define forge::secret (
  Sensitive[String[1]] $content,
  String[1] $path = "${forge::secrets_dir}/${title}",
) {
  include forge

  file { "${forge::root_dir}${path}":
    ensure    => file,
    owner     => 'root',
    group     => $forge::group,
    mode      => '0640',
    content   => Sensitive("${content.unwrap}\n"),
    show_diff => false,
    require   => File["${forge::root_dir}${forge::secrets_dir}"],
  }
}
