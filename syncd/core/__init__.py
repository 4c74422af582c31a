"""The neutral core every layer stands on: the error tree, the entities and their canonical
fields, the service-request draft and the one clock. It imports nothing else of syncd."""
