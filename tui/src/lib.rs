//! The medscribe terminal user interface (ratatui): app state, views and key handling over
//! pipeline events. Not built yet: this crate only marks its place in the workspace.
#![deny(missing_docs)]
