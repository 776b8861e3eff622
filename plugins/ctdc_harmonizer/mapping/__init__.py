"""Partner mapping folders: load and validate them (`partner`), what they say (`spec`), and
`ctdc profile`, which drafts one from an unknown extract."""
