"""What every route shares: the settings (:mod:`.config`, pydantic-settings)."""
