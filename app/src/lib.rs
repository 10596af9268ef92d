//! CacheDiT Studio's desktop side: the node editor (`gui`). The binary adds the command line.

pub mod gui;
