"""SharePoint Online documentation libraries through Microsoft Graph.

Importing this package is cheap: msgraph-sdk and azure-identity (the ``syncd[sharepoint]`` extra)
are imported only by :mod:`syncd.connectors.sharepoint.graph`, which the daemon loads only when
``[sharepoint]`` is configured.
"""
