"""The raw impressions contract upstream lands: columns and their types, the label, and the known
values of the categorical columns. The synthetic world writes to it; features read by it."""

from __future__ import annotations

COUNTRIES = ("us", "br", "de", "fr", "gb", "jp", "kr", "in", "mx", "pl")
PLATFORMS = ("desktop", "mobile", "console", "web")
SURFACES = ("home", "quest_tab", "activity_shelf", "chat_banner")
CATEGORIES = ("shooter", "rpg", "moba", "sports", "puzzle", "racing", "strategy", "sandbox")
REWARDS = ("orbs", "avatar_decoration", "in_game_item", "nitro_trial")
MAX_POSITION = 5

# Column → accepted Arrow type family; a file whose column has another type is quarantined whole.
REQUIRED: dict[str, str] = {
    "ts": "timestamp",
    "user_id": "integer",
    "quest_id": "integer",
    "country": "string",
    "platform": "string",
    "surface": "string",
    "position": "integer",
    "account_age_days": "integer",
    "user_level": "integer",
    "quest_category": "string",
    "quest_reward": "string",
}
LABEL = "label"
