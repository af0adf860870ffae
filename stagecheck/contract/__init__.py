"""The breaking-changes audit of an API contract (OpenAPI 3.0 / 3.1), pure: normalise both documents
(`normalize`), compare them under oasdiff's rule ids and levels (`compare`, `rules`), mark accepted
changes (`ignore`), and decide the stage by the `fail_on` policy (`audit`). Validation: `validation`."""
