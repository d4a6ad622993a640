"""Who a request is. One place decides (key -> key id, tier, limits); everything downstream receives the
`Identity`, never the secret."""

from gateway.auth.identity import ANONYMOUS, TIER_PRIORITY, Identity, Tier, provide_identity

__all__ = ["ANONYMOUS", "TIER_PRIORITY", "Identity", "Tier", "provide_identity"]
