"""Serving on a Ray cluster (`gpt4all-api serve --ray`, docs/scale-out.md).

    HTTP client -> Ray Serve proxy -> Ingress (reads the body, derives a routing key)
        -> DeploymentHandle + PrefixAffinityRouter -> Engine replica (the app `create_app`
        builds, run in-process for that one request; bytes stream back)

`keys` derives the routing text, `prefix` holds the affinity policy (no Ray in either),
`asgi` runs one HTTP request through an ASGI app, `router` plugs the policy into Ray Serve's
request-router extension point and `deployments` builds the Serve application.
"""
