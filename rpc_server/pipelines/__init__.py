"""Running stored pipelines: the fair run queue and the runner that hands runs
to the sandbox worker (sandbox_client). May import caching and everything below it (the
execution token is made by the app and given to the runner)."""
