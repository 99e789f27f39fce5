"""The bus (NATS JetStream) as every part of twinfleet reaches it: below actors, store
and api, importing none of them."""
