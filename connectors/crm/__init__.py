"""connectors/crm."""
