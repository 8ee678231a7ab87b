//! The mPlane information model: message kinds and their JSON representation.
