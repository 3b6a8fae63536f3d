"""The `factuality` evaluate metric and the world schema it shares with `modeling.world`."""
