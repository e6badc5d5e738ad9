"""`copgen-rt serve`: one loaded model for many clients, over OGC API - Processes - Part 1: Core.

The modules, in the order data flows through them: `command` (the click command: options ->
service), `app` (the HTTP routes), `auth` (bearer tokens), `inputs` (process inputs -> a scene
job, every path kept inside --allow-root), `service` (queue, job threads, dismiss), `jobs` (the
SQLite job store under --out) and `batcher` (every denoiser call packs the pending tiles of all
running jobs).
"""
