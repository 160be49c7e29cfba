-- What today's proxy does per request (the anchor of this benchmark): one
-- HGETALL prefix:<tool> through a keep-alive pool, first matching pattern
-- wins, else the default upstream; Redis errors fall through silently.
local redis = require "nginx.redis"
local red = redis:new()
red:set_timeout(1000)
local ok = red:connect("127.0.0.1", tonumber(ngx.var.redis_port))
local backend = nil
if ok then
    local tool = string.match(ngx.var.http_host or "", "^([^.]+)%.")
    if tool then
        local routes = red:hgetall("prefix:" .. tool)
        if routes and routes ~= ngx.null then
            for i = 1, #routes, 2 do
                if ngx.re.match(ngx.var.uri, routes[i]) then
                    backend = routes[i + 1]
                    break
                end
            end
        end
    end
    red:set_keepalive(0, 100)
end
if backend then
    ngx.var.backend = backend
end
