"""Generated from proto/ by loom.bridge.protogen: do not edit."""
