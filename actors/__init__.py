"""Actors: machine hosts, the fleet registry, clones and model distribution.

Today this package holds :class:`actors.host.MachineHost`, the in-process host that runs
many machine twins, each with its own ordered mailbox. The Ray actors, NATS consumers,
checkpoints and clones of the actors issue wrap it; see README "Status".
"""
