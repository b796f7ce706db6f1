//! Key names and characters as X keysyms (pure): `xdotool`'s key syntax
//! (`ctrl+shift+t`, `Return`, `alt+F4`) and the keysym of any character.

/// Aliases `xdotool` and computer-use APIs accept, matched without regard
/// to case, then the X keysym names (`keysymdef.h`), matched exactly first
/// and then without regard to case.
const NAMES: &[(&str, u32)] = &[
    // Modifiers, as xdotool names them.
    ("ctrl", 0xffe3),
    ("control", 0xffe3),
    ("shift", 0xffe1),
    ("alt", 0xffe9),
    ("meta", 0xffe7),
    ("super", 0xffeb),
    ("win", 0xffeb),
    ("cmd", 0xffeb),
    // Common aliases.
    ("enter", 0xff0d),
    ("return", 0xff0d),
    ("esc", 0xff1b),
    ("escape", 0xff1b),
    ("backspace", 0xff08),
    ("del", 0xffff),
    ("delete", 0xffff),
    ("ins", 0xff63),
    ("insert", 0xff63),
    ("pgup", 0xff55),
    ("pageup", 0xff55),
    ("page_up", 0xff55),
    ("prior", 0xff55),
    ("pgdn", 0xff56),
    ("pagedown", 0xff56),
    ("page_down", 0xff56),
    ("next", 0xff56),
    ("space", 0x0020),
    ("tab", 0xff09),
    ("home", 0xff50),
    ("end", 0xff57),
    ("left", 0xff51),
    ("up", 0xff52),
    ("right", 0xff53),
    ("down", 0xff54),
    ("menu", 0xff67),
    ("print", 0xff61),
    ("pause", 0xff13),
    ("capslock", 0xffe5),
    ("caps_lock", 0xffe5),
    ("numlock", 0xff7f),
    ("num_lock", 0xff7f),
    ("scroll_lock", 0xff14),
    // X names of the modifiers.
    ("shift_l", 0xffe1),
    ("shift_r", 0xffe2),
    ("control_l", 0xffe3),
    ("control_r", 0xffe4),
    ("alt_l", 0xffe9),
    ("alt_r", 0xffea),
    ("meta_l", 0xffe7),
    ("meta_r", 0xffe8),
    ("super_l", 0xffeb),
    ("super_r", 0xffec),
    ("iso_level3_shift", 0xfe03),
    // Keypad.
    ("kp_enter", 0xff8d),
    ("kp_add", 0xffab),
    ("kp_subtract", 0xffad),
    ("kp_multiply", 0xffaa),
    ("kp_divide", 0xffaf),
    ("kp_decimal", 0xffae),
    // Punctuation by name (`xdotool key minus`).
    ("minus", 0x002d),
    ("plus", 0x002b),
    ("equal", 0x003d),
    ("comma", 0x002c),
    ("period", 0x002e),
    ("slash", 0x002f),
    ("backslash", 0x005c),
    ("semicolon", 0x003b),
    ("colon", 0x003a),
    ("apostrophe", 0x0027),
    ("quotedbl", 0x0022),
    ("grave", 0x0060),
    ("asciitilde", 0x007e),
    ("exclam", 0x0021),
    ("at", 0x0040),
    ("numbersign", 0x0023),
    ("dollar", 0x0024),
    ("percent", 0x0025),
    ("asciicircum", 0x005e),
    ("ampersand", 0x0026),
    ("asterisk", 0x002a),
    ("parenleft", 0x0028),
    ("parenright", 0x0029),
    ("bracketleft", 0x005b),
    ("bracketright", 0x005d),
    ("braceleft", 0x007b),
    ("braceright", 0x007d),
    ("less", 0x003c),
    ("greater", 0x003e),
    ("question", 0x003f),
    ("underscore", 0x005f),
    ("bar", 0x007c),
];

/// Whether `keysym` is a modifier key (held while the next key of a combo
/// is pressed).
pub(crate) fn is_modifier(keysym: u32) -> bool {
    (0xffe1..=0xffee).contains(&keysym) || keysym == 0xfe03
}

/// The keysym of one character: Latin-1 is its code point, the rest of
/// Unicode `0x0100_0000 + code point` (X's rule); control characters have
/// their keys (`\n` Return, `\t` Tab, backspace, escape, delete).
pub(crate) fn char_keysym(c: char) -> Option<u32> {
    let cp = u32::from(c);
    match c {
        '\n' | '\r' => Some(0xff0d),
        '\t' => Some(0xff09),
        '\u{8}' => Some(0xff08),
        '\u{1b}' => Some(0xff1b),
        '\u{7f}' => Some(0xffff),
        _ if c.is_control() => None,
        _ if (0x20..=0x7e).contains(&cp) || (0xa0..=0xff).contains(&cp) => Some(cp),
        _ => Some(0x0100_0000 + cp),
    }
}

/// The keysym of one key name of a combo: a function key (`F1`-`F35`), an
/// alias or X name (see [`NAMES`]), a single character, or a raw
/// `0x`-prefixed keysym.
pub(crate) fn name_keysym(name: &str) -> Option<u32> {
    let mut chars = name.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return char_keysym(c);
    }
    let lower = name.to_ascii_lowercase();
    if let Some(digits) = lower.strip_prefix('f')
        && !digits.starts_with('0')
        && let Ok(n) = digits.parse::<u32>()
        && (1..=35).contains(&n)
    {
        return Some(0xffbe + n - 1);
    }
    if let Some(hex) = lower.strip_prefix("0x") {
        return u32::from_str_radix(hex, 16).ok().filter(|k| *k != 0);
    }
    NAMES
        .iter()
        .find(|(alias, _)| *alias == lower)
        .map(|(_, keysym)| *keysym)
}

/// The keysyms of a combo (`ctrl+shift+t`), pressed in order; an error
/// names the part that is no key.
pub(crate) fn parse_combo(combo: &str) -> Result<Vec<u32>, String> {
    if combo.is_empty() {
        return Err("an empty key combination".into());
    }
    // `ctrl++` is ctrl and plus.
    let mut parts = Vec::new();
    let mut rest = combo;
    while !rest.is_empty() {
        match rest.find('+') {
            Some(0) => {
                parts.push("+");
                rest = rest[1..].strip_prefix('+').unwrap_or(&rest[1..]);
            }
            Some(i) => {
                parts.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                parts.push(rest);
                rest = "";
            }
        }
    }
    parts
        .into_iter()
        .map(|part| {
            name_keysym(part.trim()).ok_or_else(|| {
                format!(
                    "`{part}` in `{combo}` is not a key name (e.g. `ctrl`, `Return`, `F4`, `a`)"
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combos_in_xdotool_syntax() {
        for (combo, want) in [
            ("ctrl+shift+t", vec![0xffe3, 0xffe1, 0x74]),
            ("Return", vec![0xff0d]),
            ("enter", vec![0xff0d]),
            ("alt+F4", vec![0xffe9, 0xffc1]),
            ("F12", vec![0xffc9]),
            ("super", vec![0xffeb]),
            ("ctrl++", vec![0xffe3, 0x2b]),
            ("+", vec![0x2b]),
            ("BackSpace", vec![0xff08]),
            ("Page_Up", vec![0xff55]),
            ("ctrl+a", vec![0xffe3, 0x61]),
            ("é", vec![0xe9]),
            ("0x1000416", vec![0x0100_0416]),
        ] {
            assert_eq!(parse_combo(combo), Ok(want), "{combo}");
        }
        for bad in ["", "ctrl+nosuchkey", "F0", "F36", "F01", "0x0"] {
            let err = parse_combo(bad).expect_err(bad);
            assert!(!err.is_empty(), "{bad}");
        }
        assert!(
            parse_combo("ctrl+nosuchkey")
                .expect_err("not a key")
                .contains("`nosuchkey`")
        );
    }

    #[test]
    fn characters_map_to_keysyms_by_xs_rule() {
        assert_eq!(char_keysym('a'), Some(0x61));
        assert_eq!(char_keysym('é'), Some(0xe9));
        assert_eq!(char_keysym('ö'), Some(0xf6));
        assert_eq!(char_keysym('Ж'), Some(0x0100_0416));
        assert_eq!(char_keysym('😀'), Some(0x0101_f600));
        assert_eq!(char_keysym('\n'), Some(0xff0d));
        assert_eq!(char_keysym('\u{1}'), None);
        assert!(is_modifier(0xffe3) && !is_modifier(0x61));
    }
}
