//! Dataverse Web API emulator (work in progress).
