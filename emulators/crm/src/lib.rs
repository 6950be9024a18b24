//! CRM API emulators (work in progress).
