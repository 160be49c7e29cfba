# frozen_string_literal: true

# Renders a Hash as a TOML document: the configuration files of forge's
# daemons are rendered from (hiera) data with this, so every key a class
# accepts reaches the file typed as given (strings quoted, integers and
# booleans bare). `undef` values are left out (TOML has no null), so an
# unset optional key takes the daemon's built-in default.
Puppet::Functions.create_function(:'forge::to_toml') do
  # @param data The document: keys are strings; values are strings,
  #   integers, floats, booleans, arrays, hashes (tables) or arrays of
  #   hashes (arrays of tables).
  # @return [String] The TOML text.
  dispatch :to_toml do
    param 'Hash', :data
    return_type 'String'
  end

  def to_toml(data)
    out = []
    emit_table(out, [], data)
    out.join("\n") + "\n"
  end

  private

  BARE_KEY = %r{\A[A-Za-z0-9_-]+\z}

  def key(k)
    k = k.to_s
    BARE_KEY.match?(k) ? k : quote(k)
  end

  def quote(s)
    escaped = s.to_s.gsub(%r{[\\"\u0000-\u001f\u007f]}) do |c|
      case c
      when '\\' then '\\\\'
      when '"' then '\\"'
      when "\n" then '\\n'
      when "\t" then '\\t'
      when "\r" then '\\r'
      else format('\\u%04X', c.ord)
      end
    end
    "\"#{escaped}\""
  end

  def table_array?(v)
    v.is_a?(Array) && !v.empty? && v.all? { |e| e.is_a?(Hash) }
  end

  def value(v, path)
    v = v.unwrap if v.respond_to?(:unwrap)
    case v
    when String, Symbol then quote(v)
    when true, false then v.to_s
    when Integer then v.to_s
    when Float
      raise Puppet::ParseError, "forge::to_toml: #{path.join('.')}: #{v} is not a TOML number" unless v.finite?
      v.to_s
    when Array
      items = v.reject(&:nil?).map { |e| value(e, path) }
      "[#{items.join(', ')}]"
    when Hash
      pairs = v.reject { |_, e| e.nil? }.map { |k, e| "#{key(k)} = #{value(e, path + [k])}" }
      "{ #{pairs.join(', ')} }"
    else
      raise Puppet::ParseError, "forge::to_toml: #{path.join('.')}: can't write a #{v.class} as TOML"
    end
  end

  def emit_table(out, path, table)
    plain = table.reject { |_, v| v.nil? || v.is_a?(Hash) || table_array?(v) }
    plain.keys.sort_by(&:to_s).each do |k|
      out << "#{key(k)} = #{value(plain[k], path + [k])}"
    end
    table.keys.sort_by(&:to_s).each do |k|
      v = table[k]
      sub = path + [k]
      if v.is_a?(Hash)
        out << '' unless out.empty?
        out << "[#{sub.map { |p| key(p) }.join('.')}]"
        emit_table(out, sub, v)
      elsif table_array?(v)
        v.each do |t|
          out << '' unless out.empty?
          out << "[[#{sub.map { |p| key(p) }.join('.')}]]"
          emit_table(out, sub, t)
        end
      end
    end
  end
end
