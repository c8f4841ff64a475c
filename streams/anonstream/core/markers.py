"""Values a generalizer releases in place of what it cannot or must not generalize."""

OTHER = "Other"  # a user-agent family not worth naming (a bot name, an odd string)
NONE = "(none)"  # an absent optional field
INVALID = "<invalid>"  # a value that does not parse as what its field holds
IP_HOST = ":ip"  # a URL host, or a path segment, that is an IP address
NAN_BAND = "NaN"  # the band of a NaN
