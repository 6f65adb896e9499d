"""From architecture to deployable artefact: export, codegen, int8, latency, MAC checks."""
