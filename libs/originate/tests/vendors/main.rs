//! Every vendor adapter against a fake of that vendor's API on loopback.

mod asterisk;
mod common;
mod general;
mod mango;
mod telphin;
mod twilio;
mod ucontact;
mod zadarma;
