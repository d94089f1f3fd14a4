"""`kvminfo publish`: this node's labels and raw features as an NFD NodeFeature object.

nodefeature.py is pure (Report -> object body, "changed?"); client.py is the
only module that talks to the API server and the only one importing
`kubernetes` (never on the NFD hook path).
"""
