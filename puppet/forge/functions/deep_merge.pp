# @summary Merges hashes recursively: a key of `$override` replaces the one
#   of `$base`, except that two hashes under the same key are merged.
#
# Used to lay a role's `*_settings` hash (any key of the daemon's config)
# over the settings the class builds from its typed parameters.
#
# @param base The settings built from parameters.
# @param override The operator's extra settings.
# @return The merged settings.
function forge::deep_merge(Hash $base, Hash $override) >> Hash {
  $override.reduce($base) |Hash $memo, Tuple $kv| {
    $k = $kv[0]
    $v = $kv[1]
    if $v =~ Hash and $memo[$k] =~ Hash {
      $memo + { $k => forge::deep_merge($memo[$k], $v) }
    } else {
      $memo + { $k => $v }
    }
  }
}
