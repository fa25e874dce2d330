"""X-Ray: the web dashboard of every Ray cluster (owner, machine type, status, jobs, logs, usage, notebooks).

`config` (settings) -> `auth` (who is asking, CSRF) -> `views` (pure page models) + `dashboard` (each
cluster's nodes and events) -> `service` -> `app` (FastAPI routes and templates). Clusters come from the
provider interface, jobs and logs from `RayJobs`.
"""
