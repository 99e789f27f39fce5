"""The Ray Serve application: GraphQL (queries, mutations, subscriptions) and REST over
the fleet of twins.

Not built yet (the serve app issue); see README "Status". The records it will serve are
already defined in :mod:`schemas` (TwinState, AnomalyRecord, RulPrediction, WorkOrder).
"""
