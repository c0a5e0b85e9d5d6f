"""The beat side of pprof-scraper: a scheduler whose entries are the plan, and the lock that keeps one beat emitting."""
