"""The model stage: online models that score a request before it is decided and learn
from labelled outcomes afterwards (River's ``score_one`` / ``learn_one`` protocol)."""
