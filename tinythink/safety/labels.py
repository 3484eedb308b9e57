"""What the guard scores: OpenAI's 13 moderation categories, prompt injection, and the sensitive domains whose
advice a person should review. Kept in one place, so the moderation response, the policy and the recipe agree."""

# OpenAI's moderation categories, in its order
CATEGORIES = ["harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
              "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
              "violence/graphic"]
# the categories the packaged data labels; each other one reports its parent's score (the card says so), and
# is never flagged on its own
CATEGORY_LABELS = ["harassment", "harassment/threatening", "hate", "illicit", "illicit/violent", "self-harm",
                   "sexual", "violence"]
PARENT = {c: c.split("/")[0] for c in CATEGORIES if c not in CATEGORY_LABELS}
HARM = set(CATEGORIES)
DOMAINS = ["medical", "legal", "financial"]  # advice to be reviewed by a person, not harm
EXTRA = ["prompt_injection", *DOMAINS]
# the guard's outputs: the labelled categories, any harm at all (HarmBench's prompts carry no category), and
# the extra labels
TRAINED = [*CATEGORY_LABELS, "harmful", *EXTRA]
