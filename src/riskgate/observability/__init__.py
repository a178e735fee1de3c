"""What riskgate tells its operators: Prometheus ``metrics`` and the JSON ``decisionlog``."""
