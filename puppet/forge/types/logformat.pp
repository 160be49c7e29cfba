# @summary A log output format of forge's daemons.
type Forge::Logformat = Enum['text', 'json']
