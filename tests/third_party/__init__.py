"""Third-party readers and writers of the formats we share, copied from their public
sources for the tests to check our files with (README, "Interoperability"). Each module's
docstring names its origin, the version or commit it was copied from, and its licence;
the copied functions are kept as written, apart from imports and typing noted there."""
