"""connectors/crm/bitrix24."""
