package io.anonstream.peer;

import java.util.Locale;
import java.util.regex.Pattern;

/**
 * The cell's dimensions, roughly as anonstream's pipeline generalizes them: a URL becomes
 * its host and path template (identifying segments replaced by placeholders, no query), a
 * User-Agent its browser family, major version and OS family. Simpler than anonstream's
 * rules (no ua-parser rule set, fewer placeholder shapes): enough for the benchmark's input.
 */
final class Generalize {
    private static final Pattern UUID =
            Pattern.compile("[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}");
    private static final Pattern HEX = Pattern.compile("[0-9a-fA-F]{16,}");
    private static final int MAX_DEPTH = 8;

    private Generalize() {}

    /** "https://www.example.com/orders/4000123?x=1" -> "www.example.com/orders/:num". */
    static String urlTemplate(String url) {
        if (url == null || url.isBlank()) {
            return "(none)";
        }
        String s = url.strip();
        int cut = indexOfAny(s, '?', '#');
        if (cut >= 0) {
            s = s.substring(0, cut);
        }
        int scheme = s.indexOf("://");
        String host = "";
        String path = s;
        if (scheme >= 0) {
            String rest = s.substring(scheme + 3);
            int slash = rest.indexOf('/');
            String authority = slash >= 0 ? rest.substring(0, slash) : rest;
            path = slash >= 0 ? rest.substring(slash + 1) : "";
            authority = authority.substring(authority.lastIndexOf('@') + 1);
            int colon = authority.indexOf(':');
            host = (colon >= 0 ? authority.substring(0, colon) : authority).toLowerCase(Locale.ROOT);
        }
        StringBuilder out = new StringBuilder(host.length() + path.length() + 8).append(host);
        int depth = 0;
        for (String segment : path.split("/")) {
            if (segment.isEmpty()) {
                continue;
            }
            if (++depth > MAX_DEPTH) {
                out.append("/...");
                break;
            }
            out.append('/').append(segment(segment));
        }
        if (depth == 0) {
            out.append('/');
        }
        return out.toString();
    }

    private static String segment(String raw) {
        if (raw.chars().allMatch(Character::isDigit)) {
            return ":num";
        }
        if (raw.indexOf('@') >= 0 || raw.contains("%40")) {
            return ":email";
        }
        if (raw.length() == 36 && UUID.matcher(raw).matches()) {
            return ":uuid";
        }
        if (raw.length() >= 16 && HEX.matcher(raw).matches()) {
            return ":hash";
        }
        return raw;
    }

    private static int indexOfAny(String s, char a, char b) {
        int i = s.indexOf(a);
        int j = s.indexOf(b);
        return i < 0 ? j : (j < 0 ? i : Math.min(i, j));
    }

    /** "... Chrome/131.0.0.0 Safari/537.36" on Windows -> "Chrome 131 / Windows". */
    static String userAgent(String ua) {
        if (ua == null || ua.isBlank()) {
            return "Other / Other";
        }
        String browser;
        if (ua.contains("Edg/")) {
            browser = "Edge" + major(ua, "Edg/");
        } else if (ua.contains("Firefox/")) {
            browser = "Firefox" + major(ua, "Firefox/");
        } else if (ua.contains("Chrome/")) {
            browser = (ua.contains("Mobile") ? "Chrome Mobile" : "Chrome") + major(ua, "Chrome/");
        } else if (ua.contains("Safari/") && ua.contains("Version/")) {
            browser = (ua.contains("Mobile/") ? "Mobile Safari" : "Safari") + major(ua, "Version/");
        } else {
            browser = "Other";
        }
        String os;
        if (ua.contains("Windows")) {
            os = "Windows";
        } else if (ua.contains("iPhone") || ua.contains("iPad")) {
            os = "iOS";
        } else if (ua.contains("Android")) {
            os = "Android";
        } else if (ua.contains("Mac OS X")) {
            os = "Mac OS X";
        } else if (ua.contains("Linux")) {
            os = "Linux";
        } else {
            os = "Other";
        }
        return browser + " / " + os;
    }

    /** " 131" for the digits after {@code token}, "" when there are none (or 5 or more). */
    private static String major(String ua, String token) {
        int start = ua.indexOf(token) + token.length();
        int end = start;
        while (end < ua.length() && end - start < 5 && Character.isDigit(ua.charAt(end))) {
            end++;
        }
        int digits = end - start;
        return digits == 0 || digits > 4 ? "" : " " + Integer.parseInt(ua.substring(start, end));
    }
}
