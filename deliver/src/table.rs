//! Aligned tables for people (`--json` is for machines).

/// Columns padded to their widest cell, two spaces apart; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, w)) in cells.into_iter().zip(&widths).enumerate() {
            out.push_str(cell);
            if i < last {
                out.push_str(&" ".repeat(w - cell.chars().count() + 2));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out += &line(row.iter().map(String::as_str).collect());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_whatever_the_cell_widths() {
        let rows =
            vec![vec!["acme-shop".into(), "чат".into(), "1".into()], vec!["b".into(), "offline".into(), "20".into()]];
        let out = table(&["INTEGRATION", "KIND", "COUNT"], &rows);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "INTEGRATION  KIND     COUNT");
        assert_eq!(lines[1], "acme-shop    чат      1");
        assert_eq!(lines[2], "b            offline  20");
    }
}
