"""The API over the fleet of twins: authentication, the in-replica view fed by NATS, the
GraphQL schema and the REST routes. :mod:`serve_app` puts them on Ray Serve."""
