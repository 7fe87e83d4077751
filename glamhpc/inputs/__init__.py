"""Guards on what users type or write: names, batch-script strings, YAML files, error lines.

Below the config schema (layer 0, no glamhpc imports): the schema, the run directory and the
launchers all ask these modules, so each rule exists once.
"""
