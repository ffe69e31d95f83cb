local function fmt(x) return string.format('%.6f', x) end
