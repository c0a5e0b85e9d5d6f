"""The reserved label names of targets and profiles, as Prometheus and Alloy spell them: the one
place they are defined."""

from __future__ import annotations

#: host[:port] of a target, set by discovery, rewritten by relabeling
ADDRESS = "__address__"
#: http or https, overriding the job's ``scheme``
SCHEME = "__scheme__"
#: the path of the profile, set per profile type
PROFILE_PATH = "__profile_path__"
#: ``profiling_config.path_prefix`` of the job
PROFILE_PATH_PREFIX = "__profile_path_prefix__"
#: the job's interval and timeout, set before relabeling as Prometheus does
SCRAPE_INTERVAL = "__scrape_interval__"
SCRAPE_TIMEOUT = "__scrape_timeout__"
#: ``__param_<name>``: the first value of a query parameter
PARAM_PREFIX = "__param_"
#: discovery's metadata; dropped before a profile is stored
META_PREFIX = "__meta_"
#: the profile type of a stored profile
NAME = "__name__"
